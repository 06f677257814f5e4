#!/usr/bin/env node
import { runWorkerCli } from '../dist/index.js';
runWorkerCli(process.argv);
