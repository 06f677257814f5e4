/**
 * The serialized run config and its fingerprint.
 *
 * `serializeConfig()` turns a resolved config into the plain object that the coordinator sends to
 * workers in the handshake and stores in checkpoints. `configHash()` fingerprints only the fields
 * that change the math, so two processes (or a run and its checkpoint) can check that they train
 * the same thing while still differing in ports, paths and timeouts (`RUN_LOCAL_KEYS`).
 */
import { createHash } from 'node:crypto';
import { CONFIG_KEYS, type ConfigKey, type RunConfig, type SerializedRunConfig } from './schema.js';

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
  // What happens before the training phase: the plain phase is its own run (its config hashes its
  // epochs and lr), and the training phase's config names what it made (from, teacher).
  'plainEpochs',
  'plainLr',
  // What happens after the training phase: it changes none of that phase's steps or checkpoints
  // (the fine-tuning phase is its own run, whose config hashes its ranks, epochs and lr).
  'pruneEnergy',
  'pruneMacs',
  'pruneMacWeight',
  'finetuneEpochs',
  'finetuneLr',
  'finetuneLambdaO',
  'finetuneWeightDecay',
  'finetuneAverage',
  'sweepEnergies',
  // Where the pipeline distills: the training phase's own config carries the distillation (hashed)
  // or not, so the switch itself changes nothing a checkpoint must match.
  'distillTraining',
] as const satisfies readonly ConfigKey[]);

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

/** Distillation's fields: hashed only while it is on (α > 0), so every config without it keeps the hash it had before they existed. */
const DISTILL_KEYS = new Set<string>(['distillAlpha', 'distillTemperature', 'teacher', 'teacherRanks', 'teacherArch', 'extraTeachers'] satisfies ConfigKey[]);

/**
 * sha256 (hex) of the canonical JSON of the fields that affect the math (every field except
 * `RUN_LOCAL_KEYS`). Workers and checkpoints compare it to refuse training a different model.
 * `ranks: null` (every layer full rank) is left out, so configs and checkpoints from before the
 * field existed keep their hash; any ranks given are hashed (they change the parameter shapes).
 * Likewise the distillation fields while α is 0, `teacherArch` while null (the teacher is the run's
 * architecture), `extraTeachers` while empty (one teacher), `sparsityEnd` at 1 (the term to the last step)
 * and `cutout` at 0 (off).
 */
export function configHash(cfg: RunConfig | SerializedRunConfig): string {
  const picked: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (RUN_LOCAL.has(k) || (k === 'ranks' && (v === null || v === undefined))) continue;
    if (k === 'sparsityEnd' && (v === 1 || v === undefined)) continue;
    if (k === 'cutout' && (v === 0 || v === undefined)) continue;
    if (k === 'teacherArch' && (v === null || v === undefined)) continue;
    if (k === 'extraTeachers' && (v === undefined || (Array.isArray(v) && v.length === 0))) continue;
    if (DISTILL_KEYS.has(k) && !((cfg as { distillAlpha?: number }).distillAlpha! > 0)) continue;
    picked[k] = v;
  }
  return createHash('sha256').update(canonicalJson(picked)).digest('hex');
}
