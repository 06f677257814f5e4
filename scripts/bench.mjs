#!/usr/bin/env node
// `pnpm bench <name>` runs bench/<name>.ts from source (tsx + the "source" export condition),
// so benchmarks need no build and always measure the code in the working tree.
// Each bench's leading doc comment is its help (`pnpm bench <name> --help`) and names every option
// it takes: an option it does not name is refused before the bench starts, so that a typo
// (`--rep 7`) does not run a long benchmark with the default.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const available = readdirSync(join(root, 'bench')).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3)).sort();
const fileOf = (name) => join(root, 'bench', `${name}.ts`);

/** The bench's leading doc comment as plain text, without the comment's stars. */
function docOf(name) {
  const m = readFileSync(fileOf(name), 'utf8').match(/^\/\*\*([\s\S]*?)\*\//);
  if (!m) return '';
  return m[1]
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
}

/** The doc's opening words, up to its usage line (in backticks) or first sentence's end, for the list of benches. */
function summaryOf(name) {
  const doc = docOf(name).replace(/\s+/g, ' ');
  const tick = doc.indexOf('`');
  const head = tick < 0 ? doc : doc.slice(0, tick);
  const end = head.search(/[.?](\s|$)/);
  const first = (end < 0 ? head : head.slice(0, end + 1)).replace(/[\s:,]+$/, '').trim();
  return first.length > 100 ? `${first.slice(0, 99)}…` : first;
}

function usage(stream) {
  stream.write(`usage: pnpm bench <name> [options]   (pnpm bench <name> --help: its options)\n\n`);
  for (const name of available) stream.write(`  ${name.padEnd(14)} ${summaryOf(name)}\n`);
}

const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || name === '-h') {
  usage(process.stdout);
  process.exit(0);
}
if (!available.includes(name) || !existsSync(fileOf(name))) {
  process.stderr.write(`unknown benchmark '${name}'; expected one of: ${available.join(', ')}\n`);
  usage(process.stderr);
  process.exit(2);
}
const doc = docOf(name);
if (rest.includes('--help') || rest.includes('-h')) {
  process.stdout.write(`pnpm bench ${name}\n\n${doc}\n`);
  process.exit(0);
}
const known = new Set(doc.match(/--[a-z0-9][a-z0-9-]*/g) ?? []);
const unknown = rest.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]).filter((a) => !known.has(a));
if (unknown.length > 0) {
  const options = [...known].sort().join(' ') || '(none)';
  process.stderr.write(
    `pnpm bench ${name}: unknown option ${unknown.join(', ')}; it takes ${options}. See \`pnpm bench ${name} --help\`.\n`,
  );
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', fileOf(name), ...rest], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
