import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkpointFileName, latestCheckpoint, listCheckpoints, loadCheckpoint, saveCheckpoint, type Checkpoint } from './checkpoint.js';
import { serializeConfig } from './config/hash.js';
import { parseConfig } from './config/resolve.js';
import { isSvdTrainError } from './errors.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'svd-ckpt-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});

function makeCkpt(step: number, hash = 'abc123'): Checkpoint {
  const w = Float32Array.from({ length: 2 * 3 * 3 * 3 }, (_, i) => Math.sin(i + step) * 1e3);
  const s = Float32Array.of(3.5, -0, 1e-38, -2.25);
  return {
    version: 1,
    config: serializeConfig(parseConfig({ model: 'resnet20', lr: 0.1, milestones: [81, 122] })),
    configHash: hash,
    step,
    epoch: Math.floor(step / 10),
    params: [
      { name: 'conv.weight', shape: [2, 3, 3, 3], data: w },
      { name: 'layers.0.conv1.s', shape: [4], data: s },
    ],
    buffers: [{ name: 'bn1.running_mean', shape: [3], data: Float32Array.of(0.5, NaN, Infinity) }],
    optimizer: { kind: 'sgd', step, slots: { momentum_buffer: { 'conv.weight': w.map((v) => v / 7), 'layers.0.conv1.s': s.map((v) => v * 2) } } },
    sampler: { size: 100, batch: 10, seed: 0, dropLast: false, epoch: 1, position: 30, step },
    rng: { s: 12345 },
    metrics: { loss: 1.25 },
  };
}

function expectCode(fn: () => unknown, code: string, re?: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(isSvdTrainError(e), String(e)).toBe(true);
    expect((e as { code: string }).code).toBe(code);
    if (re) expect((e as Error).message).toMatch(re);
    return;
  }
  throw new Error(`expected ${code}, nothing thrown`);
}

/**
 * Rewrites the checkpoint at `path` with its JSON header replaced by `edit(header)`, the data section
 * kept and a valid sha256: a file whose damage the checksum cannot see (a crafted one).
 */
function rewriteHeader(path: string, edit: (h: Record<string, unknown>) => unknown): void {
  const buf = readFileSync(path);
  const hlen = buf.readUInt32LE(12);
  const dataStart = 16 + hlen + ((8 - ((16 + hlen) % 8)) % 8);
  const header = Buffer.from(JSON.stringify(edit(JSON.parse(buf.subarray(16, 16 + hlen).toString('utf8')) as Record<string, unknown>)), 'utf8');
  const prefix = Buffer.alloc(16);
  buf.copy(prefix, 0, 0, 12);
  prefix.writeUInt32LE(header.length, 12);
  const pad = Buffer.alloc((8 - ((16 + header.length) % 8)) % 8);
  const body = Buffer.concat([prefix, header, pad, buf.subarray(dataStart, buf.length - 32)]);
  writeFileSync(path, Buffer.concat([body, createHash('sha256').update(body).digest()]));
}

describe('checkpoint', () => {
  it('round-trips every field and tensor bit for bit (NaN, ±Inf, −0, denormals)', () => {
    const dir = tempDir();
    const c = makeCkpt(42);
    const p = saveCheckpoint(dir, c);
    expect(p).toBe(join(dir, 'ckpt-0000000042.svdckpt'));
    const r = loadCheckpoint(p, { configHash: 'abc123' });
    expect(r).toEqual(c);
    expect(Object.is(r.params[1].data[1], -0)).toBe(true);
    expect(r.params[0].data).toBeInstanceOf(Float32Array);
    expect(r.optimizer.slots.momentum_buffer['conv.weight']).toEqual(c.optimizer.slots.momentum_buffer['conv.weight']);
  });

  it('refuses a truncated file and any flipped bit with CHECKPOINT_CORRUPT naming the file', () => {
    const dir = tempDir();
    const p = saveCheckpoint(dir, makeCkpt(1));
    const good = readFileSync(p);
    for (const cut of [0, 10, 40, good.length - 1, good.length - 33]) {
      writeFileSync(p, good.subarray(0, cut));
      expectCode(() => loadCheckpoint(p), 'CHECKPOINT_CORRUPT', new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    }
    for (const pos of [3, 9, 20, Math.floor(good.length / 2), good.length - 40, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[pos] ^= 0x10;
      writeFileSync(p, bad);
      expectCode(() => loadCheckpoint(p), 'CHECKPOINT_CORRUPT');
    }
    writeFileSync(p, good);
    expect(loadCheckpoint(p).step).toBe(1);
  });

  it('another file (an exported model.json) is "not an svd-train checkpoint", with no advice to delete it', () => {
    const p = join(tempDir(), 'model.json');
    writeFileSync(p, JSON.stringify({ modelTopology: { class_name: 'Model' }, weightsManifest: [] }));
    expectCode(() => loadCheckpoint(p), 'CHECKPOINT_CORRUPT', /model\.json is not an svd-train checkpoint: it starts with .*expected "SVDCKPT\\0"\. Fix: pass a \.svdckpt file/);
    expect(() => loadCheckpoint(p)).not.toThrow(/delete/);
  });

  it('checks the header of a file whose checksum is intact: a crafted header is CHECKPOINT_CORRUPT naming the field, never a crash or a polluted prototype', () => {
    const dir = tempDir();
    const p = saveCheckpoint(dir, makeCkpt(3));
    const good = readFileSync(p);
    rewriteHeader(p, (h) => h);
    expect(loadCheckpoint(p).step).toBe(3);
    const cases: [(h: Record<string, unknown>) => unknown, RegExp][] = [
      [() => null, /header field \(root\)/],
      [(h) => ({ ...h, step: -1 }), /header field step/],
      [(h) => ({ ...h, sampler: { ...(h.sampler as object), batch: '10' } }), /header field sampler\.batch/],
      [(h) => ({ ...h, tensors: (h.tensors as { shape: number[] }[]).map((t, i) => (i === 0 ? { ...t, shape: [-2, -27] } : t)) }), /header field tensors\.0\.shape/],
      [(h) => ({ ...h, tensors: (h.tensors as object[]).map((t, i) => (i === 0 ? { ...t, offset: 0.5 } : t)) }), /header field tensors\.0\.offset/],
      [(h) => ({ ...h, optimizer: { ...(h.optimizer as object), kind: 'rmsprop' } }), /header field optimizer\.kind/],
    ];
    for (const [edit, re] of cases) {
      writeFileSync(p, good);
      rewriteHeader(p, edit);
      expectCode(() => loadCheckpoint(p), 'CHECKPOINT_CORRUPT', re);
    }
    // A tensor in a slot the header does not list, named __proto__, is refused (it once reached
    // Object.prototype through the slots object's inherited __proto__).
    writeFileSync(p, good);
    rewriteHeader(p, (h) => ({ ...h, tensors: (h.tensors as { group: string }[]).map((t) => (t.group === 'optimizer' ? { ...t, slot: '__proto__', name: 'polluted' } : t)) }));
    expectCode(() => loadCheckpoint(p), 'CHECKPOINT_CORRUPT', /unknown group 'optimizer' \/ slot '__proto__'/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // An optimizer slot named __proto__ is a slot like any other.
    writeFileSync(p, good);
    rewriteHeader(p, (h) => {
      const opt = h.optimizer as { slots: string[] };
      const tensors = h.tensors as { group: string; slot?: string; name: string }[];
      return { ...h, optimizer: { ...opt, slots: ['__proto__'] }, tensors: tensors.map((t) => (t.group === 'optimizer' ? { ...t, slot: '__proto__', name: 'polluted' } : t)) };
    });
    const c = loadCheckpoint(p);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.keys(c.optimizer.slots)).toEqual(['__proto__']);
    expect(Object.hasOwn(c.optimizer.slots, '__proto__')).toBe(true);
  });

  it('a checkpoint the disk cannot take is CHECKPOINT_WRITE_FAILED naming the step, the folder, the errno and the fix', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'file'), 'not a folder');
    expectCode(() => saveCheckpoint(join(dir, 'file', 'checkpoints'), makeCkpt(4)), 'CHECKPOINT_WRITE_FAILED', /cannot write the checkpoint of step 4 in \S+file\/checkpoints \(ENOTDIR: .*\)\. Fix: free disk space or make \S+ writable, then run the same command with --resume/);
  });

  it('refuses a config hash mismatch with actual, expected and the fix', () => {
    const dir = tempDir();
    const p = saveCheckpoint(dir, makeCkpt(5, 'hash-A'));
    expectCode(() => loadCheckpoint(p, { configHash: 'hash-B' }), 'CHECKPOINT_CONFIG_MISMATCH', /hash-A.*hash-B.*--from/s);
    expectCode(() => latestCheckpoint(dir, { configHash: 'hash-B' }), 'CHECKPOINT_CONFIG_MISMATCH');
  });

  it('keeps only the last K checkpoints', () => {
    const dir = tempDir();
    for (const s of [10, 20, 30, 40, 50]) saveCheckpoint(dir, makeCkpt(s), { keep: 3 });
    expect(readdirSync(dir).sort()).toEqual([checkpointFileName(30), checkpointFileName(40), checkpointFileName(50)]);
  });

  it('latest skips corrupt newer files with a warning; a leftover temp file never shadows it', () => {
    const dir = tempDir();
    expect(latestCheckpoint(dir)).toBeNull();
    expect(latestCheckpoint(join(dir, 'missing'))).toBeNull();
    saveCheckpoint(dir, makeCkpt(100));
    saveCheckpoint(dir, makeCkpt(200));
    // crash mid-write of step 300: a partial temp file is all that exists
    const partial = readFileSync(join(dir, checkpointFileName(200))).subarray(0, 50);
    writeFileSync(join(dir, `.${checkpointFileName(300)}.tmp-999-deadbeef`), partial);
    expect(latestCheckpoint(dir)!.checkpoint.step).toBe(200);
    // the newest checkpoint got truncated on disk afterwards
    truncateSync(join(dir, checkpointFileName(200)), 100);
    const warnings: string[] = [];
    const latest = latestCheckpoint(dir, { onWarning: (m) => warnings.push(m) });
    expect(latest!.checkpoint.step).toBe(100);
    expect(latest!.path).toBe(join(dir, checkpointFileName(100)));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/ckpt-0000000200\.svdckpt/);
    // the next save cleans leftover temp files
    saveCheckpoint(dir, makeCkpt(400));
    expect(readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('only a missing folder means "no checkpoints"; an unlistable one is CHECKPOINT_UNREADABLE naming it', () => {
    const dir = tempDir();
    expect(listCheckpoints(join(dir, 'missing'))).toEqual([]);
    // A file where the folder should be (ENOTDIR) stands for every other readdir failure
    // (EACCES cannot be provoked portably: tests may run as root).
    const file = join(dir, 'not-a-folder');
    writeFileSync(file, 'x');
    expectCode(() => listCheckpoints(file), 'CHECKPOINT_UNREADABLE', /not-a-folder.*ENOTDIR.*Fix:/);
    // resuming must not quietly start from step 0 over it
    expectCode(() => latestCheckpoint(file), 'CHECKPOINT_UNREADABLE');
  });

  it('round-trips a 45 MB parameter set (speed is for benchmarks, not tests)', () => {
    const dir = tempDir();
    const c = makeCkpt(7);
    const data = new Float32Array(11_250_000).map((_, i) => (i % 1013) / 7);
    c.params = [{ name: 'big', shape: [11_250_000], data }];
    c.optimizer.slots = { momentum_buffer: {} };
    const r = loadCheckpoint(saveCheckpoint(dir, c));
    expect(r.params[0].shape).toEqual([11_250_000]);
    expect(Buffer.from(r.params[0].data.buffer, r.params[0].data.byteOffset, r.params[0].data.byteLength).equals(Buffer.from(data.buffer))).toBe(true);
  });
});
