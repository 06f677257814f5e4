#!/usr/bin/env node
// `pnpm bench <name>` runs bench/<name>.ts from source (tsx + the "source" export condition),
// so benchmarks need no build and always measure the code in the working tree.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const available = readdirSync(join(root, 'bench')).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || !available.includes(name)) {
  if (name && name !== '--help') console.error(`unknown benchmark '${name}'; expected one of: ${available.join(', ')}`);
  console.error(`usage: pnpm bench <${available.join('|')}> [options]`);
  process.exit(name && name !== '--help' ? 2 : 0);
}
const file = join(root, 'bench', `${name}.ts`);
if (!existsSync(file)) process.exit(2);
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', file, ...rest], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
