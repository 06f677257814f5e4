/**
 * Checkpoints: one self-validating binary file per save, written atomically, last K kept.
 *
 * File layout (`ckpt-<step, 10 digits>.svdckpt`):
 *
 *   bytes 0..7     magic "SVDCKPT\0"
 *   bytes 8..11    format version, uint32 LE
 *   bytes 12..15   header length H, uint32 LE
 *   16..16+H       UTF-8 JSON header: config, configHash, step, epoch, sampler, rng, metrics,
 *                  optimizer scalars, and the tensor index [{ group, slot?, name, shape, offset, length }]
 *                  (offset/length in float32 elements from the start of the data section)
 *   zero padding to a multiple of 8
 *   data section   every tensor's float32 values, little-endian, back to back
 *   last 32 bytes  sha256 of everything before them
 *
 * Why this shape: the header is human-inspectable (`head -c 4096`), tensors are raw so a 45 MB
 * model saves and loads at disk speed, and the trailing checksum catches truncation and bit rot.
 * A save writes a temp file in the same directory, fsyncs it, renames it into place and fsyncs the
 * directory, so a crash leaves either the old set of files or the new one, never a torn file under
 * a checkpoint name (leftover temp files never match the checkpoint pattern).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { SerializedRunConfig } from './config/schema.js';
import { OPTIMIZERS } from './defaults.js';
import { SvdTrainError } from './errors.js';
import type { OptimizerState } from './optimizers.js';
import { ShapeSchema, type WireTensor } from './tensor.js';
import type { RngState } from './rng.js';
import type { SamplerState } from './sampler.js';

/** Version of the on-disk format (bumped on incompatible layout changes). */
export const CHECKPOINT_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('SVDCKPT\0', 'latin1');
const PREFIX_BYTES = 16;
const HASH_BYTES = 32;
const FILE_RE = /^ckpt-(\d+)\.svdckpt$/;
const TMP_RE = /^\.ckpt-\d+\.svdckpt\.tmp-/;
const LITTLE_ENDIAN = endianness() === 'LE';

/** Everything needed to resume a run exactly (see docs/CONTRACTS.md). */
export interface Checkpoint {
  /** Checkpoint content version (CHECKPOINT_FORMAT_VERSION when written by this code). */
  version: number;
  /** serializeConfig() of the run that wrote it (the header is trusted once its sha256 and version check out). */
  config: SerializedRunConfig;
  configHash: string;
  /** Optimizer steps completed. */
  step: number;
  epoch: number;
  /** Parameters in `named_parameters()` order. */
  params: WireTensor[];
  /** BN running statistics. */
  buffers: WireTensor[];
  optimizer: OptimizerState;
  sampler: SamplerState;
  rng?: RngState | Record<string, unknown>;
  metrics?: Record<string, unknown>;
}


interface Header {
  version: number;
  config: Checkpoint['config'];
  configHash: string;
  step: number;
  epoch: number;
  sampler: SamplerState;
  rng?: Checkpoint['rng'];
  metrics?: Checkpoint['metrics'];
  optimizer: { kind: OptimizerState['kind']; step: number; slots: string[] };
  tensors: TensorEntry[];
}

const count = () => z.number().int().nonnegative();
const plainObject = () => z.record(z.string(), z.unknown());

/** One tensor of the index: offset and length in float32 elements from the start of the data section. */
const TensorEntrySchema = z.object({
  group: z.enum(['params', 'buffers', 'optimizer']),
  slot: z.string().optional(),
  name: z.string(),
  shape: ShapeSchema,
  offset: count(),
  length: count(),
});
type TensorEntry = z.output<typeof TensorEntrySchema>;

/**
 * The header's structure, checked before any of it is used: the sha256 only tells a damaged file
 * from an intact one, and a checkpoint passed to --from, --teacher, eval or prune may come from
 * anywhere. The config is an object here and parsed by the config schema where it is used.
 */
const HeaderSchema = z.object({
  version: z.number().int(),
  config: plainObject(),
  configHash: z.string(),
  step: count(),
  epoch: count(),
  sampler: z.object({ size: count(), batch: count(), seed: z.number().int(), dropLast: z.boolean(), epoch: count(), position: count(), step: count() }),
  rng: plainObject().optional(),
  metrics: plainObject().optional(),
  optimizer: z.object({ kind: z.enum(OPTIMIZERS), step: count(), slots: z.array(z.string()) }),
  tensors: z.array(TensorEntrySchema),
});

/** File name of the checkpoint for `step` (zero-padded so names sort by step). */
export function checkpointFileName(step: number): string {
  return `ckpt-${String(step).padStart(10, '0')}.svdckpt`;
}

function bytesOf(data: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i], true);
  return out;
}

function buildHeader(ckpt: Checkpoint): { header: Header; chunks: Float32Array[] } {
  const tensors: TensorEntry[] = [];
  const chunks: Float32Array[] = [];
  let offset = 0;
  const add = (group: TensorEntry['group'], name: string, shape: number[], data: Float32Array, slot?: string) => {
    const e: TensorEntry = { group, name, shape: [...shape], offset, length: data.length };
    if (slot !== undefined) e.slot = slot;
    tensors.push(e);
    chunks.push(data);
    offset += data.length;
  };
  const shapes = new Map<string, number[]>();
  for (const t of ckpt.params) {
    add('params', t.name, t.shape, t.data);
    shapes.set(t.name, t.shape);
  }
  for (const t of ckpt.buffers) add('buffers', t.name, t.shape, t.data);
  const slots = Object.keys(ckpt.optimizer.slots);
  for (const slot of slots) {
    for (const [name, data] of Object.entries(ckpt.optimizer.slots[slot])) {
      const shape = shapes.get(name);
      add('optimizer', name, shape !== undefined && shape.reduce((a, b) => a * b, 1) === data.length ? shape : [data.length], data, slot);
    }
  }
  const header: Header = {
    version: ckpt.version,
    config: ckpt.config,
    configHash: ckpt.configHash,
    step: ckpt.step,
    epoch: ckpt.epoch,
    sampler: ckpt.sampler,
    optimizer: { kind: ckpt.optimizer.kind, step: ckpt.optimizer.step, slots },
    tensors,
  };
  if (ckpt.rng !== undefined) header.rng = ckpt.rng;
  if (ckpt.metrics !== undefined) header.metrics = ckpt.metrics;
  return { header, chunks };
}

function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some platforms (Windows, some network filesystems) cannot fsync a directory; the rename is
    // still atomic there, only its durability across power loss is weaker.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Checkpoint files in `dir`, newest step first. A folder that does not exist holds no checkpoints
 * (a fresh run); any other failure to read it (EACCES, ENOTDIR, EIO) throws CHECKPOINT_UNREADABLE,
 * because treating it as empty would silently restart a run from step 0 instead of resuming it.
 */
export function listCheckpoints(dir: string): { path: string; step: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new SvdTrainError(
      'CHECKPOINT_UNREADABLE',
      `checkpoint folder ${dir} cannot be listed (${code ?? (e as Error).message}); expected a readable folder of ckpt-….svdckpt files (or none yet). ` +
        'Fix: check that the path is a folder and that this user may read it, or point --out/--resume at another run',
      { dir, errno: code },
      { cause: e },
    );
  }
  const out: { path: string; step: number }[] = [];
  for (const n of names) {
    const m = FILE_RE.exec(n);
    if (m) out.push({ path: join(dir, n), step: Number(m[1]) });
  }
  return out.sort((a, b) => b.step - a.step);
}

export interface SaveCheckpointOptions {
  /** Keep only the newest `keep` checkpoint files (default: keep all). */
  keep?: number;
}

/**
 * Writes `ckpt` to `dir/ckpt-<step>.svdckpt` atomically, then deletes all but the newest `keep`
 * checkpoints and any temp files left by an earlier crash. Called by the coordinator only.
 * @returns the path written.
 */
export function saveCheckpoint(dir: string, ckpt: Checkpoint, opts: SaveCheckpointOptions = {}): string {
  try {
    return writeCheckpoint(dir, ckpt, opts);
  } catch (e) {
    // A file-system failure (ENOSPC, EROFS, EACCES, ENOTDIR, …) is the disk's, not a bug: say which
    // checkpoint failed, what is left intact, and how to go on.
    const errno = (e as NodeJS.ErrnoException | null)?.code;
    if (typeof errno !== 'string' || !/^E[A-Z]+$/.test(errno)) throw e;
    let left = '';
    try {
      const newest = listCheckpoints(dir)[0];
      left = newest ? ` The checkpoints already there are intact, the newest ${newest.path} (step ${newest.step}).` : '';
    } catch {
      /* the folder itself is the problem */
    }
    throw new SvdTrainError(
      'CHECKPOINT_WRITE_FAILED',
      `cannot write the checkpoint of step ${ckpt.step} in ${dir} (${errno}: ${(e as Error).message}).${left} Fix: free disk space or make ${dir} writable, then run the same command with --resume.`,
      { path: dir, errno },
      { cause: e },
    );
  }
}

function writeCheckpoint(dir: string, ckpt: Checkpoint, opts: SaveCheckpointOptions): string {
  mkdirSync(dir, { recursive: true });
  const { header, chunks } = buildHeader(ckpt);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32LE(CHECKPOINT_FORMAT_VERSION, 8);
  prefix.writeUInt32LE(json.length, 12);
  const pad = Buffer.alloc((8 - ((PREFIX_BYTES + json.length) % 8)) % 8);

  const finalName = checkpointFileName(ckpt.step);
  const tmp = join(dir, `.${finalName}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const hash = createHash('sha256');
  const fd = openSync(tmp, 'w');
  try {
    const write = (b: Uint8Array) => {
      hash.update(b);
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    };
    write(prefix);
    write(json);
    write(pad);
    for (const c of chunks) write(bytesOf(c));
    const digest = hash.digest();
    let off = 0;
    while (off < digest.length) off += writeSync(fd, digest, off, digest.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw e;
  }
  closeSync(fd);
  const finalPath = join(dir, finalName);
  renameSync(tmp, finalPath);
  fsyncDir(dir);

  for (const n of readdirSync(dir)) {
    if (TMP_RE.test(n) && join(dir, n) !== tmp) {
      try {
        unlinkSync(join(dir, n));
      } catch {
        /* another process removed it */
      }
    }
  }
  if (opts.keep !== undefined && opts.keep > 0) {
    for (const old of listCheckpoints(dir).slice(opts.keep)) {
      try {
        unlinkSync(old.path);
      } catch {
        /* already gone */
      }
    }
  }
  return finalPath;
}

function corrupt(path: string, what: string): SvdTrainError {
  return new SvdTrainError(
    'CHECKPOINT_CORRUPT',
    `checkpoint ${path} is corrupt: ${what}; delete it (the run resumes from the previous checkpoint) or start without --resume`,
    { path },
  );
}

export interface LoadCheckpointOptions {
  /** When given, refuse a checkpoint whose configHash differs (CHECKPOINT_CONFIG_MISMATCH). */
  configHash?: string;
}

/** Reads and fully validates a checkpoint file (magic, checksum, version, index, config hash). */
export function loadCheckpoint(path: string, opts: LoadCheckpointOptions = {}): Checkpoint {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new SvdTrainError(
      'CHECKPOINT_CORRUPT',
      `checkpoint ${path} cannot be read (${(e as Error).message}); expected a checkpoint file such as runs/NAME/checkpoints/ckpt-0000000100.svdckpt. Fix: check the path`,
      { path },
      { cause: e },
    );
  }
  // A file cut inside the magic is a truncated checkpoint; any other start is another file.
  if (!buf.subarray(0, 8).equals(MAGIC) && !(buf.length < 8 && MAGIC.subarray(0, buf.length).equals(buf))) {
    // Not a damaged checkpoint but another file (often an exported model.json): never suggest
    // deleting it.
    throw new SvdTrainError(
      'CHECKPOINT_CORRUPT',
      `${path} is not an svd-train checkpoint: it starts with ${JSON.stringify(buf.subarray(0, 8).toString('latin1'))}, expected "SVDCKPT\\0". ` +
        'Fix: pass a .svdckpt file written by `svd-coord start` or `prune` (runs/NAME/checkpoints/ckpt-….svdckpt); an exported model.json is loaded with tf.loadLayersModel, not by svd-coord.',
      { path },
    );
  }
  if (buf.length < PREFIX_BYTES + HASH_BYTES) throw corrupt(path, `it has ${buf.length} bytes, fewer than the ${PREFIX_BYTES + HASH_BYTES} of an empty checkpoint (truncated)`);
  const body = buf.subarray(0, buf.length - HASH_BYTES);
  const stored = buf.subarray(buf.length - HASH_BYTES);
  const actual = createHash('sha256').update(body).digest();
  if (!actual.equals(stored)) throw corrupt(path, `sha256 ${actual.toString('hex').slice(0, 16)}… does not match the stored ${stored.toString('hex').slice(0, 16)}… (truncated or damaged file)`);
  const version = buf.readUInt32LE(8);
  if (version !== CHECKPOINT_FORMAT_VERSION) throw corrupt(path, `format version ${version}, this svd-train reads version ${CHECKPOINT_FORMAT_VERSION} (written by a different svd-train release)`);
  const hlen = buf.readUInt32LE(12);
  if (PREFIX_BYTES + hlen > body.length) throw corrupt(path, `header length ${hlen} runs past the end of the file`);
  let raw: unknown;
  try {
    raw = JSON.parse(buf.subarray(PREFIX_BYTES, PREFIX_BYTES + hlen).toString('utf8'));
  } catch (e) {
    throw corrupt(path, `header is not valid JSON (${(e as Error).message})`);
  }
  const parsed = HeaderSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw corrupt(path, `header field ${issue.path.length ? issue.path.join('.') : '(root)'} is not valid (${issue.message})`);
  }
  const header = parsed.data as unknown as Header;
  if (opts.configHash !== undefined && header.configHash !== opts.configHash) {
    throw new SvdTrainError(
      'CHECKPOINT_CONFIG_MISMATCH',
      `checkpoint ${path} was written with config hash ${header.configHash}, this run's config hashes to ${opts.configHash}; resume with the same model/optimizer/schedule/data settings as that run (its config is in the checkpoint header), or use --from to fine-tune instead of --resume`,
      { path, actual: header.configHash, expected: opts.configHash },
    );
  }
  const dataStart = PREFIX_BYTES + hlen + ((8 - ((PREFIX_BYTES + hlen) % 8)) % 8);
  const dataFloats = (body.length - dataStart) / 4;
  const params: WireTensor[] = [];
  const buffers: WireTensor[] = [];
  // Null-prototype maps: a slot or tensor named '__proto__' is a key like any other, not a way into
  // Object.prototype.
  const slots: OptimizerState['slots'] = Object.create(null) as OptimizerState['slots'];
  for (const s of header.optimizer.slots) slots[s] = Object.create(null) as Record<string, Float32Array>;
  for (const e of header.tensors) {
    const size = e.shape.reduce((a, b) => a * b, 1);
    if (!(Number.isInteger(e.offset) && Number.isInteger(e.length) && e.offset >= 0 && e.offset + e.length <= dataFloats && size === e.length)) {
      throw corrupt(path, `tensor '${e.name}' (offset ${e.offset}, length ${e.length}, shape [${e.shape}]) does not fit the ${dataFloats} floats of data`);
    }
    const data = new Float32Array(e.length);
    const src = body.subarray(dataStart + e.offset * 4, dataStart + (e.offset + e.length) * 4);
    if (LITTLE_ENDIAN) new Uint8Array(data.buffer).set(src);
    else {
      const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
      for (let i = 0; i < e.length; i++) data[i] = dv.getFloat32(i * 4, true);
    }
    if (e.group === 'params') params.push({ name: e.name, shape: e.shape, data });
    else if (e.group === 'buffers') buffers.push({ name: e.name, shape: e.shape, data });
    else if (e.group === 'optimizer' && e.slot !== undefined && Object.hasOwn(slots, e.slot)) slots[e.slot][e.name] = data;
    else throw corrupt(path, `tensor '${e.name}' has unknown group '${e.group}'${e.slot ? ` / slot '${e.slot}'` : ''}`);
  }
  const ckpt: Checkpoint = {
    version: header.version,
    config: header.config,
    configHash: header.configHash,
    step: header.step,
    epoch: header.epoch,
    params,
    buffers,
    optimizer: { kind: header.optimizer.kind, step: header.optimizer.step, slots },
    sampler: header.sampler,
  };
  if (header.rng !== undefined) ckpt.rng = header.rng;
  if (header.metrics !== undefined) ckpt.metrics = header.metrics;
  return ckpt;
}

export interface LatestCheckpointOptions extends LoadCheckpointOptions {
  /** Called for each checkpoint skipped because it is corrupt (default: ignore). */
  onWarning?: (message: string, error: SvdTrainError) => void;
}

/**
 * The newest checkpoint in `dir` that loads and validates, or null when there is none. Corrupt
 * files are skipped (reported through `onWarning`); a config mismatch is not skipped but thrown,
 * because falling back to an older checkpoint of the same (wrong) run would not help.
 */
export function latestCheckpoint(dir: string, opts: LatestCheckpointOptions = {}): { path: string; checkpoint: Checkpoint } | null {
  for (const { path } of listCheckpoints(dir)) {
    try {
      return { path, checkpoint: loadCheckpoint(path, opts) };
    } catch (e) {
      if (e instanceof SvdTrainError && e.code === 'CHECKPOINT_CORRUPT') {
        opts.onWarning?.(`skipping ${path}: ${e.message}`, e);
        continue;
      }
      throw e;
    }
  }
  return null;
}
