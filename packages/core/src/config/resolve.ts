/**
 * Resolving a run config: CLI flags, environment and an optional JSON file are merged with
 * precedence flags > env > file > DEFAULTS, keeping where each value came from, so that an invalid
 * or unknown key is reported with its source and the closest valid key.
 */
import { readFileSync } from 'node:fs';
import { DEFAULTS, ENV_VARS } from '../defaults.js';
import { SvdTrainError } from '../errors.js';
import { CONFIG_KEYS, RunConfigSchema, type RunConfig } from './schema.js';

/** `lambdaO` -> `lambda-o`, `stepTimeoutMs` -> `step-timeout-ms` (the CLI flag name). */
export function toKebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (ch) => `-${ch.toLowerCase()}`);
}

/** `lambda-o` -> `lambdaO`; camelCase input is returned unchanged. */
export function toCamelCase(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, ch: string) => ch.toUpperCase());
}

type Source = { kind: 'flag' | 'env' | 'file' | 'default' | 'object'; name: string };

function describeSource(key: string, s: Source | undefined): string {
  if (!s) return 'default';
  switch (s.kind) {
    case 'flag':
      return `flag --${toKebabCase(key)}`;
    case 'env':
      return `environment variable ${s.name}`;
    case 'file':
      return `"${key}" in config file ${s.name}`;
    default:
      return s.kind;
  }
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The valid config key closest to `key` (ignoring case, dashes and underscores). */
export function closestConfigKey(key: string): string {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string = CONFIG_KEYS[0];
  let bestD = Infinity;
  for (const k of CONFIG_KEYS) {
    const d = levenshtein(norm(key), norm(k));
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

const KNOWN = new Set<string>(CONFIG_KEYS);

/**
 * Normalizes keys to camelCase, drops `undefined` values and refuses unknown keys.
 * `origin` names where the keys came from in error messages.
 */
function normalizeKeys(raw: Record<string, unknown>, origin: string, flagStyle: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [rawKey, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    const key = toCamelCase(rawKey);
    if (!KNOWN.has(key)) {
      const hint = closestConfigKey(rawKey);
      const shown = flagStyle ? `--${rawKey}` : `"${rawKey}"`;
      const suggestion = flagStyle ? `--${toKebabCase(hint)}` : `"${hint}"`;
      throw new SvdTrainError(
        'CONFIG_UNKNOWN_KEY',
        `Unknown config key ${shown} in ${origin}. Did you mean ${suggestion}? ` +
          `Valid keys: ${CONFIG_KEYS.join(', ')}.`,
        { key: rawKey, suggestion: hint, origin },
      );
    }
    if (key in out && !Object.is(out[key], value) && JSON.stringify(out[key]) !== JSON.stringify(value)) {
      throw new SvdTrainError(
        'CONFIG_INVALID',
        `Config key ${key} is given twice in ${origin} with different values ` +
          `(${JSON.stringify(out[key])} and ${JSON.stringify(value)}). Fix: give it once.`,
        { key, origin },
      );
    }
    out[key] = value;
  }
  return out;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SvdTrainError(
      'CONFIG_FILE',
      `Cannot read config file ${file}: ${(e as Error).message}. Fix: check the path given to --config.`,
      { file },
      { cause: e },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SvdTrainError(
      'CONFIG_FILE',
      `Config file ${file} is not valid JSON: ${(e as Error).message}. Expected a JSON object such as {"lr": 0.05}.`,
      { file },
      { cause: e },
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SvdTrainError(
      'CONFIG_FILE',
      `Config file ${file} holds ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}; expected a JSON object such as {"lr": 0.05}.`,
      { file },
    );
  }
  return parsed as Record<string, unknown>;
}

function valueAt(obj: Record<string, unknown>, path: readonly PropertyKey[]): unknown {
  let v: unknown = obj;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

function fmt(v: unknown): string {
  if (v === undefined) return 'nothing';
  // JSON has no Infinity or NaN: it would print them as null.
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return JSON.stringify(v) ?? `a ${typeof v}`;
}

function validate(merged: Record<string, unknown>, sources: Record<string, Source>): RunConfig {
  const r = RunConfigSchema.safeParse(merged);
  if (r.success) return r.data;
  const issues = r.error.issues.map((iss) => {
    const key = String(iss.path[0] ?? '');
    const field = iss.path.map(String).join('.');
    const value = valueAt(merged, iss.path);
    return { field, value, expected: iss.message, source: describeSource(key, sources[key]) };
  });
  const lines = issues.map(
    (i) => `  ${i.field} = ${fmt(i.value)} (from ${i.source}): expected ${i.expected.replace(/^[A-Z][a-z]+( [a-z]+)?: expected /, '')}`,
  );
  throw new SvdTrainError(
    'CONFIG_INVALID',
    `Invalid run config:\n${lines.join('\n')}\nFix: correct the value where it came from, or drop it to use the default.`,
    { issues },
  );
}

/**
 * Resolves the run config. Precedence: `flags` > environment (SVD_TRAIN_DATA -> data,
 * SVD_TRAIN_TOKEN -> token) > JSON `file` > DEFAULTS.
 *
 * @param flags CLI options; camelCase or kebab-case keys; `undefined` values are ignored (so the CLI
 *   must not give its options commander defaults, or they would hide the file and env). Values
 *   are typed: the CLI converts flag text first (cli's `coerceFlagValues`).
 * @param file path to a JSON config file (or an already parsed object, e.g. a checkpoint's config).
 * @param env environment, `process.env` when omitted.
 * @throws SvdTrainError CONFIG_UNKNOWN_KEY (names the key and the closest valid one),
 *   CONFIG_INVALID (names field, value, source and expectation), CONFIG_FILE.
 */
export function resolveConfig(
  flags: Record<string, unknown>,
  file?: string | Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): RunConfig {
  const sources: Record<string, Source> = {};
  const merged: Record<string, unknown> = {};
  const layer = (values: Record<string, unknown>, source: (key: string) => Source) => {
    for (const [k, v] of Object.entries(values)) {
      merged[k] = v;
      sources[k] = source(k);
    }
  };
  if (file !== undefined) {
    const fileName = typeof file === 'string' ? file : 'config object';
    const raw = typeof file === 'string' ? readConfigFile(file) : file;
    layer(normalizeKeys(raw, `config file ${fileName}`, false), () => ({ kind: 'file', name: fileName }));
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(ENV_VARS)) {
    const v = env[name];
    if (v !== undefined && v !== '') fromEnv[key] = v;
  }
  layer(fromEnv, (k) => ({ kind: 'env', name: ENV_VARS[k as keyof typeof ENV_VARS] }));
  layer(normalizeKeys(flags, 'command-line flags', true), () => ({ kind: 'flag', name: '' }));
  // The stall warning must come before the step timeout. When only --step-timeout-ms is given and
  // it is below the default warning (30 s), the warning follows it (a quarter of it) instead of
  // refusing the flag for a key the user never set.
  const timeout = merged.stepTimeoutMs;
  if (merged.stallWarnMs === undefined && typeof timeout === 'number' && timeout < DEFAULTS.stallWarnMs) {
    merged.stallWarnMs = Math.max(1, Math.floor(timeout / 4));
  }
  return validate(merged, sources);
}

/**
 * Validates a plain config object received from elsewhere (the handshake, a checkpoint),
 * filling missing fields with defaults. Same errors as `resolveConfig`.
 */
export function parseConfig(obj: unknown): RunConfig {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new SvdTrainError('CONFIG_INVALID', `Run config must be an object; got ${fmt(obj)}.`);
  }
  const values = normalizeKeys(obj as Record<string, unknown>, 'config object', false);
  const sources = Object.fromEntries(Object.keys(values).map((k): [string, Source] => [k, { kind: 'object', name: '' }]));
  return validate(values, sources);
}
