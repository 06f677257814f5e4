/**
 * The run configuration: one schema, one resolver, one hash.
 *
 * Config flows one way: CLI flags, environment and an optional JSON file go through
 * `resolveConfig()` (precedence flags > env > file > DEFAULTS), the result is validated by
 * `RunConfigSchema`, and `serializeConfig()` turns it into the plain object that the coordinator
 * sends to workers in the handshake and stores in checkpoints. `configHash()` fingerprints only
 * the fields that change the math, so two processes (or a run and its checkpoint) can check that
 * they train the same thing while still differing in ports, paths and timeouts.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  BACKENDS,
  DECAY_ON,
  DECOMPOSITIONS,
  DEFAULTS,
  ENV_VARS,
  FORWARD_MODES,
  MODELS,
  OPTIMIZERS,
  SCHEDULES,
  SPARSITIES,
  STALL_ACTIONS,
} from './defaults.js';
import { SvdTrainError } from './errors.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.int().min(min).max(max);
const nonNeg = () => z.number().min(0);
const positive = () => z.number().positive();
const path = () => z.string().min(1);

/**
 * PyTorch module names of the SVD layers our ResNets have (resnet.ts): the stem conv, the convs of
 * each block, the 1×1 shortcut conv and the classifier. Keys of `ranks` must be one of these.
 */
export const SVD_MODULE_NAME_RE = /^(stem\.0|layers\.\d+\.(conv1|conv2|shortcut\.0)|fc)$/;

/** Shape of a run config; every field has a default from `DEFAULTS`. */
export const RunConfigSchema = z
  .strictObject({
    model: z.enum(MODELS).default(DEFAULTS.model),
    svd: z.boolean().default(DEFAULTS.svd),
    decomposition: z.enum(DECOMPOSITIONS).default(DEFAULTS.decomposition),
    forward: z.enum(FORWARD_MODES).default(DEFAULTS.forward),
    ranks: z.record(z.string(), int(1)).nullable().default(DEFAULTS.ranks),
    sparsity: z.enum(SPARSITIES).default(DEFAULTS.sparsity),
    lambdaO: nonNeg().default(DEFAULTS.lambdaO),
    lambdaS: nonNeg().default(DEFAULTS.lambdaS),
    optimizer: z.enum(OPTIMIZERS).default(DEFAULTS.optimizer),
    lr: nonNeg().default(DEFAULTS.lr),
    momentum: z.number().min(0).lt(1).default(DEFAULTS.momentum),
    nesterov: z.boolean().default(DEFAULTS.nesterov),
    weightDecay: nonNeg().default(DEFAULTS.weightDecay),
    decayOn: z.enum(DECAY_ON).default(DEFAULTS.decayOn),
    adamBetas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default((): [number, number] => [DEFAULTS.adamBetas[0], DEFAULTS.adamBetas[1]]),
    adamEps: positive().default(DEFAULTS.adamEps),
    schedule: z.enum(SCHEDULES).default(DEFAULTS.schedule),
    milestones: z.array(int(1)).default(() => [...DEFAULTS.milestones]),
    gamma: positive().default(DEFAULTS.gamma),
    warmupEpochs: nonNeg().default(DEFAULTS.warmupEpochs),
    cycleMomentum: z.boolean().default(DEFAULTS.cycleMomentum),
    baseMomentum: z.number().min(0).lt(1).default(DEFAULTS.baseMomentum),
    maxMomentum: z.number().min(0).lt(1).default(DEFAULTS.maxMomentum),
    pctStart: z.number().gt(0).lt(1).default(DEFAULTS.pctStart),
    divFactor: positive().default(DEFAULTS.divFactor),
    finalDivFactor: positive().default(DEFAULTS.finalDivFactor),
    epochs: int(1).default(DEFAULTS.epochs),
    batch: int(1).default(DEFAULTS.batch),
    seed: int(0).default(DEFAULTS.seed),
    augment: z.boolean().default(DEFAULTS.augment),
    data: path().nullable().default(DEFAULTS.data),
    limitTrain: int(1).nullable().default(DEFAULTS.limitTrain),
    limitTest: int(1).nullable().default(DEFAULTS.limitTest),
    pruneEnergy: z.number().min(0).lt(1).nullable().default(DEFAULTS.pruneEnergy),
    pruneMacs: positive().nullable().default(DEFAULTS.pruneMacs),
    finetuneEpochs: int(0).default(DEFAULTS.finetuneEpochs),
    finetuneLr: positive().nullable().default(DEFAULTS.finetuneLr),
    sweepEnergies: z.array(z.number().min(0).lt(1)).max(64).default(() => [...DEFAULTS.sweepEnergies]),
    host: z.string().min(1).default(DEFAULTS.host),
    port: int(0, 65535).default(DEFAULTS.port),
    minWorkers: int(1).default(DEFAULTS.minWorkers),
    spawn: int(0).default(DEFAULTS.spawn),
    out: path().default(DEFAULTS.out),
    resume: z.boolean().default(DEFAULTS.resume),
    from: path().nullable().default(DEFAULTS.from),
    token: z.string().min(1).nullable().default(DEFAULTS.token),
    insecure: z.boolean().default(DEFAULTS.insecure),
    evalEvery: int(0).default(DEFAULTS.evalEvery),
    checkpointEvery: int(0).default(DEFAULTS.checkpointEvery),
    keepCheckpoints: int(1).default(DEFAULTS.keepCheckpoints),
    stepTimeoutMs: int(1).default(DEFAULTS.stepTimeoutMs),
    stallWarnMs: int(1).default(DEFAULTS.stallWarnMs),
    stallAction: z.enum(STALL_ACTIONS).default(DEFAULTS.stallAction),
    handshakeTimeoutMs: int(1).default(DEFAULTS.handshakeTimeoutMs),
    maxMessageBytes: int(1024).default(DEFAULTS.maxMessageBytes),
    maxWorkerBatch: int(1).default(DEFAULTS.maxWorkerBatch),
    backend: z.enum(BACKENDS).default(DEFAULTS.backend),
    threads: int(1, 1024).default(DEFAULTS.threads),
  })
  .superRefine((c, ctx) => {
    for (const key of Object.keys(c.ranks ?? {})) {
      if (!SVD_MODULE_NAME_RE.test(key)) {
        ctx.addIssue({
          code: 'custom',
          path: ['ranks', key],
          message: `a PyTorch module name of an SVD layer as key ('stem.0', 'layers.K.conv1', 'layers.K.conv2', 'layers.K.shortcut.0' or 'fc'), not ${JSON.stringify(key)}`,
        });
      }
    }
    if (c.ranks !== null && Object.keys(c.ranks).length > 0 && !c.svd) {
      ctx.addIssue({ code: 'custom', path: ['ranks'], message: 'null with svd off: only SVD layers have a rank' });
    }
    for (let i = 1; i < c.milestones.length; i++) {
      if (c.milestones[i]! <= c.milestones[i - 1]!) {
        ctx.addIssue({
          code: 'custom',
          path: ['milestones'],
          message: `strictly ascending epochs (element ${i} = ${c.milestones[i]} is not above ${c.milestones[i - 1]})`,
        });
        break;
      }
    }
    if (c.optimizer === 'sgd' && c.nesterov && c.momentum === 0) {
      // PyTorch refuses this combination too: Nesterov without momentum is plain SGD in disguise.
      ctx.addIssue({ code: 'custom', path: ['momentum'], message: 'momentum > 0 when nesterov is on (or pass --no-nesterov)' });
    }
    if (c.cycleMomentum && c.baseMomentum > c.maxMomentum) {
      ctx.addIssue({ code: 'custom', path: ['baseMomentum'], message: `at most maxMomentum (${c.maxMomentum}): one-cycle momentum falls from maxMomentum to baseMomentum` });
    }
    if (c.pruneEnergy === null && c.pruneMacs === null && c.finetuneEpochs > 0) {
      ctx.addIssue({ code: 'custom', path: ['finetuneEpochs'], message: '0 without --prune-energy or --prune-macs: fine-tuning follows pruning (pass --prune-energy e, or use start --from CKPT to fine-tune a checkpoint)' });
    }
    if (c.pruneEnergy !== null && c.pruneMacs !== null) {
      ctx.addIssue({ code: 'custom', path: ['pruneMacs'], message: `null when pruneEnergy is set (${c.pruneEnergy}): give either an energy or a MAC budget, not both` });
    }
    if (c.stallWarnMs > c.stepTimeoutMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['stallWarnMs'],
        message: `at most stepTimeoutMs (${c.stepTimeoutMs}): the stall warning must come before the step timeout`,
      });
    }
  });

/** A fully resolved, validated run configuration. */
export type RunConfig = z.output<typeof RunConfigSchema>;
/** What `serializeConfig` returns: the run config as plain JSON, without the secret token. */
export type SerializedRunConfig = Omit<RunConfig, 'token'>;
type ConfigKey = keyof RunConfig;

// Compile-time check that the defaults table and the schema agree.
const _defaultsMatchSchema: RunConfig = DEFAULTS;
void _defaultsMatchSchema;

/** All config keys, in schema order (camelCase). */
export const CONFIG_KEYS = Object.freeze(Object.keys(RunConfigSchema.shape) as ConfigKey[]);

/**
 * Fields that only say where and how this process runs, or what happens after its training phase,
 * not what a training step computes. They are left out of `configHash`, so a resumed run may
 * change its port, output folder or pruning energy. Everything else
 * (including fields added later) is hashed by default, which fails safe.
 */
export const RUN_LOCAL_KEYS = Object.freeze([
  'host',
  'port',
  'out',
  'resume',
  'token',
  'insecure',
  'spawn',
  'data',
  'minWorkers',
  'stepTimeoutMs',
  'handshakeTimeoutMs',
  'stallWarnMs',
  'stallAction',
  'evalEvery',
  'checkpointEvery',
  'keepCheckpoints',
  'backend',
  'threads',
  'maxMessageBytes',
  // What happens after the training phase: it changes none of that phase's steps or checkpoints
  // (the fine-tuning phase is its own run, whose config hashes its ranks, epochs and lr).
  'pruneEnergy',
  'pruneMacs',
  'finetuneEpochs',
  'finetuneLr',
  'sweepEnergies',
] as const satisfies readonly ConfigKey[]);

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
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** The valid config key closest to `key` (ignoring case, dashes and underscores). */
export function closestConfigKey(key: string): string {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string = CONFIG_KEYS[0]!;
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

/** Kind of each field, for turning CLI strings ("0.1", "false", "81,122") into typed values. */
function fieldKind(key: ConfigKey): 'number' | 'boolean' | 'numbers' | 'number|null' | 'ranks' | 'string' {
  if (key === 'limitTrain' || key === 'limitTest' || key === 'pruneEnergy' || key === 'pruneMacs' || key === 'finetuneLr') return 'number|null';
  if (key === 'ranks') return 'ranks';
  const d: unknown = DEFAULTS[key];
  if (typeof d === 'number') return 'number';
  if (typeof d === 'boolean') return 'boolean';
  if (Array.isArray(d)) return 'numbers';
  return 'string';
}

function toNumber(s: string): number | undefined {
  const t = s.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isNaN(n) ? undefined : n;
}

/**
 * Flags may reach us as strings when the CLI declares no parser; convert them by field kind.
 * A string that does not parse is left alone so the schema reports it with its original text.
 */
function coerceStrings(values: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(values)) {
    out[key] = v;
    if (typeof v !== 'string') continue;
    const kind = fieldKind(key as ConfigKey);
    if (kind === 'number') {
      const n = toNumber(v);
      if (n !== undefined) out[key] = n;
    } else if (kind === 'number|null') {
      if (/^(null|none)$/i.test(v.trim())) out[key] = null;
      else {
        const n = toNumber(v);
        if (n !== undefined) out[key] = n;
      }
    } else if (kind === 'boolean') {
      if (/^(true|1|yes)$/i.test(v.trim())) out[key] = true;
      else if (/^(false|0|no)$/i.test(v.trim())) out[key] = false;
    } else if (kind === 'ranks') {
      const parsed = parseRanks(v);
      if (parsed !== undefined) out[key] = parsed;
    } else if (kind === 'numbers') {
      const parts = v.replace(/^\s*\[|\]\s*$/g, '').split(',');
      const nums = parts.map(toNumber);
      if (v.trim() === '' || /^\[\s*\]$/.test(v.trim())) out[key] = [];
      else if (nums.every((n) => n !== undefined)) out[key] = nums;
    }
  }
  return out;
}

/**
 * `--ranks` text: 'none'/'null', a JSON object ('{"fc": 5}') or 'module=rank' pairs separated by
 * commas ('stem.0=3,layers.0.conv1=4'). Returns undefined when it is none of these, so the schema
 * reports the original text.
 */
function parseRanks(v: string): Record<string, number> | null | undefined {
  const t = v.trim();
  if (/^(null|none)$/i.test(t)) return null;
  if (t.startsWith('{')) {
    try {
      const o: unknown = JSON.parse(t);
      return o !== null && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, number>) : undefined;
    } catch {
      return undefined;
    }
  }
  const out: Record<string, number> = {};
  for (const part of t.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    const n = m ? toNumber(m[2]!) : undefined;
    if (!m || n === undefined) return undefined;
    out[m[1]!] = n;
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
  return JSON.stringify(v) ?? String(v);
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
 *   must not give its options commander defaults, or they would hide the file and env). String
 *   values are converted by field type ("0.1", "false", "81,122", "none").
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
  layer(coerceStrings(normalizeKeys(flags, 'command-line flags', true)), () => ({ kind: 'flag', name: '' }));
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
  const sources = Object.fromEntries(Object.keys(values).map((k) => [k, { kind: 'object', name: '' } as Source]));
  return validate(values, sources);
}

/** The run config as a plain JSON object (schema key order, arrays copied), without the token. */
export function serializeConfig(cfg: RunConfig): SerializedRunConfig {
  const out: Record<string, unknown> = {};
  for (const k of CONFIG_KEYS) {
    if (k === 'token' || !(k in cfg)) continue;
    const v = cfg[k];
    out[k] = Array.isArray(v) ? [...v] : v !== null && typeof v === 'object' ? { ...v } : v;
  }
  return out as SerializedRunConfig;
}

/** JSON with object keys sorted at every depth, so equal configs give equal bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

const RUN_LOCAL = new Set<string>(RUN_LOCAL_KEYS);

/**
 * sha256 (hex) of the canonical JSON of the fields that affect the math (every field except
 * `RUN_LOCAL_KEYS`). Workers and checkpoints compare it to refuse training a different model.
 * `ranks: null` (every layer full rank) is left out, so configs and checkpoints from before the
 * field existed keep their hash; any ranks given are hashed (they change the parameter shapes).
 */
export function configHash(cfg: RunConfig | SerializedRunConfig): string {
  const picked: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (RUN_LOCAL.has(k) || (k === 'ranks' && (v === null || v === undefined))) continue;
    picked[k] = v;
  }
  return createHash('sha256').update(canonicalJson(picked)).digest('hex');
}
