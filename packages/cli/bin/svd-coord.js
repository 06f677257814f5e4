#!/usr/bin/env node
import { runCoordCli } from '../dist/index.js';
runCoordCli(process.argv);
