import { describe, expect, it } from 'vitest';
import { CIFAR_MEAN, CIFAR_PAD_VALUE, CIFAR_STD, assembleBatch, sampleAugmentation, type SplitLike } from './input-pipeline.js';

const RECORD = 3072;

/** A split of `count` records whose pixel bytes are a deterministic function of (record, channel, h, w). */
function makeSplit(count: number): SplitLike {
  const images = new Uint8Array(count * RECORD);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    labels[n] = n % 10;
    for (let c = 0; c < 3; c++)
      for (let h = 0; h < 32; h++)
        for (let w = 0; w < 32; w++) images[n * RECORD + c * 1024 + h * 32 + w] = (n * 37 + c * 101 + h * 7 + w * 3 + ((h * w) % 11)) & 255;
  }
  return { images, labels, count };
}

const norm = (b: number, c: number) => Math.fround((b / 255 - CIFAR_MEAN[c]) / CIFAR_STD[c]);

/** Straightforward torchvision-style reference: pad 4 with zeros, crop at (top, left), flip, normalize. */
function referenceSample(split: SplitLike, idx: number, top: number, left: number, flip: boolean): Float32Array {
  const out = new Float32Array(RECORD);
  for (let h = 0; h < 32; h++)
    for (let w = 0; w < 32; w++) {
      const cw = flip ? 31 - w : w;
      const ph = h + top - 4;
      const pw = cw + left - 4;
      for (let c = 0; c < 3; c++) {
        const byte = ph >= 0 && ph < 32 && pw >= 0 && pw < 32 ? split.images[idx * RECORD + c * 1024 + ph * 32 + pw] : 0;
        out[(h * 32 + w) * 3 + c] = norm(byte, c);
      }
    }
  return out;
}

describe('assembleBatch', () => {
  it('x=[1,32,32,3] no augment: golden normalized values in NHWC order', () => {
    const images = new Uint8Array(RECORD);
    // pixel (h=2, w=5): R=255, G=0, B=128; pixel (0,0): R=10, G=20, B=30
    images[0 * 1024 + 2 * 32 + 5] = 255;
    images[1 * 1024 + 2 * 32 + 5] = 0;
    images[2 * 1024 + 2 * 32 + 5] = 128;
    images[0] = 10;
    images[1024] = 20;
    images[2048] = 30;
    const { x, y } = assembleBatch({ images, labels: new Uint8Array([7]), count: 1 }, [0], { seed: 0, epoch: 0, augment: false });
    expect(x.length).toBe(RECORD);
    expect(Array.from(y)).toEqual([7]);
    const at = (h: number, w: number, c: number) => x[(h * 32 + w) * 3 + c];
    expect(at(2, 5, 0)).toBeCloseTo((1 - 0.4914) / 0.247, 6);
    expect(at(2, 5, 1)).toBeCloseTo((0 - 0.4822) / 0.2435, 6);
    expect(at(2, 5, 2)).toBeCloseTo((128 / 255 - 0.4465) / 0.2616, 6);
    expect(at(0, 0, 0)).toBeCloseTo((10 / 255 - 0.4914) / 0.247, 6);
    expect(at(0, 0, 1)).toBeCloseTo((20 / 255 - 0.4822) / 0.2435, 6);
    expect(at(0, 0, 2)).toBeCloseTo((30 / 255 - 0.4465) / 0.2616, 6);
    expect(at(0, 1, 0)).toBeCloseTo(-0.4914 / 0.247, 6);
  });

  it('x=[n,32,32,3] no augment equals the reference at offset (4,4) unflipped for every sample', () => {
    const split = makeSplit(5);
    const { x, y } = assembleBatch(split, [3, 1, 4], { seed: 1, epoch: 2, augment: false });
    expect(Array.from(y)).toEqual([3, 1, 4]);
    [3, 1, 4].forEach((idx, s) => expect(x.subarray(s * RECORD, (s + 1) * RECORD)).toEqual(referenceSample(split, idx, 4, 4, false)));
  });

  it('augment matches the torchvision-style reference (pad-4 zero crop, then flip) for every sample', () => {
    const split = makeSplit(64);
    const idx = Array.from({ length: 64 }, (_, i) => (i * 13) % 64);
    const { x } = assembleBatch(split, idx, { seed: 42, epoch: 3, augment: true });
    let flips = 0;
    idx.forEach((i, s) => {
      const a = sampleAugmentation(42, 3, i);
      expect(a.dy).toBeGreaterThanOrEqual(-4);
      expect(a.dy).toBeLessThanOrEqual(4);
      expect(a.dx).toBeGreaterThanOrEqual(-4);
      expect(a.dx).toBeLessThanOrEqual(4);
      if (a.flip) flips++;
      expect(x.subarray(s * RECORD, (s + 1) * RECORD)).toEqual(referenceSample(split, i, a.dy + 4, a.dx + 4, a.flip));
    });
    expect(flips).toBeGreaterThan(10);
    expect(flips).toBeLessThan(54);
  });

  it('padding pixels are the zero pixel normalized (−mean/std) and flip mirrors columns', () => {
    const split = makeSplit(2000);
    let sawPad = false;
    let sawFlip = false;
    for (let i = 0; i < 2000 && !(sawPad && sawFlip); i++) {
      const a = sampleAugmentation(5, 0, i);
      const { x } = assembleBatch(split, [i], { seed: 5, epoch: 0, augment: true });
      if (a.dy === -4) {
        sawPad = true;
        for (let w = 0; w < 32; w++) for (let c = 0; c < 3; c++) {
          expect(x[(0 * 32 + w) * 3 + c]).toBe(CIFAR_PAD_VALUE[c]);
          expect(x[(3 * 32 + w) * 3 + c]).toBeCloseTo(-CIFAR_MEAN[c] / CIFAR_STD[c], 6);
        }
      }
      if (a.flip && a.dx === 0 && a.dy === 0) {
        sawFlip = true;
        for (let h = 0; h < 32; h++) for (let w = 0; w < 32; w++)
          expect(x[(h * 32 + w) * 3 + 1]).toBe(norm(split.images[i * RECORD + 1024 + h * 32 + (31 - w)], 1));
      }
    }
    expect(sawPad && sawFlip).toBe(true);
  });

  it('a sample is the same regardless of batch composition and order; epochs differ', () => {
    const split = makeSplit(32);
    const opts = { seed: 9, epoch: 1, augment: true };
    const a = assembleBatch(split, [5, 6, 7], opts).x;
    const b = assembleBatch(split, [20, 7, 1, 5], opts).x;
    expect(a.subarray(2 * RECORD, 3 * RECORD)).toEqual(b.subarray(1 * RECORD, 2 * RECORD));
    expect(a.subarray(0, RECORD)).toEqual(b.subarray(3 * RECORD, 4 * RECORD));
    let differ = 0;
    for (let i = 0; i < 32; i++) {
      const e1 = assembleBatch(split, [i], { seed: 9, epoch: 1, augment: true }).x;
      const e2 = assembleBatch(split, [i], { seed: 9, epoch: 2, augment: true }).x;
      if (e1.some((v, k) => v !== e2[k])) differ++;
    }
    expect(differ).toBeGreaterThan(24);
  });

  it('writes into out buffers without allocating, and refuses bad indices / small buffers', () => {
    const split = makeSplit(4);
    const out = { x: new Float32Array(4 * RECORD), y: new Int32Array(4) };
    const r = assembleBatch(split, [1, 2], { seed: 0, epoch: 0, augment: true, out });
    expect(r.x.buffer).toBe(out.x.buffer);
    expect(r.x.length).toBe(2 * RECORD);
    expect(() => assembleBatch(split, [4], { seed: 0, epoch: 0, augment: false })).toThrow(/outside the split/);
    expect(() => assembleBatch(split, [0, 1], { seed: 0, epoch: 0, augment: false, out: { x: new Float32Array(10), y: new Int32Array(2) } })).toThrow(/need/);
  });

  it('assembles 128 samples well under 10 ms (median)', () => {
    const split = makeSplit(1024);
    const idx = Int32Array.from({ length: 128 }, (_, i) => (i * 7) % 1024);
    const out = { x: new Float32Array(128 * RECORD), y: new Int32Array(128) };
    const times: number[] = [];
    for (let k = 0; k < 60; k++) {
      const t = performance.now();
      assembleBatch(split, idx, { seed: 0, epoch: k, augment: true, out });
      times.push(performance.now() - t);
    }
    times.sort((p, q) => p - q);
    expect(times[30]).toBeLessThan(10);
  });
});

describe('Cutout', () => {
  const split = makeSplit(40);
  const indices = Int32Array.from({ length: 40 }, (_, i) => i);

  it('leaves every crop and flip as without it, and zeroes exactly the drawn square (clipped at the border)', () => {
    const plain = assembleBatch(split, indices, { seed: 3, epoch: 2, augment: true });
    const cut = assembleBatch(split, indices, { seed: 3, epoch: 2, augment: true, cutout: 16 });
    let clipped = 0;
    for (let s = 0; s < 40; s++) {
      const a = sampleAugmentation(3, 2, s, 16);
      const b = sampleAugmentation(3, 2, s);
      expect([a.dy, a.dx, a.flip]).toEqual([b.dy, b.dx, b.flip]);
      const [hs, ws] = [a.cutBottom - a.cutTop, a.cutRight - a.cutLeft];
      expect(hs).toBeGreaterThan(0);
      expect(hs).toBeLessThanOrEqual(16);
      expect(ws).toBeLessThanOrEqual(16);
      if (hs < 16 || ws < 16) clipped++;
      for (let h = 0; h < 32; h++)
        for (let w = 0; w < 32; w++) {
          const inside = h >= a.cutTop && h < a.cutBottom && w >= a.cutLeft && w < a.cutRight;
          for (let c = 0; c < 3; c++) {
            const o = s * RECORD + (h * 32 + w) * 3 + c;
            expect(cut.x[o], `sample ${s} (${h}, ${w}, ${c})`).toBe(inside ? 0 : plain.x[o]);
          }
        }
    }
    // Centres near the border are clipped, as in DeVries & Taylor's code (most of 40 draws are).
    expect(clipped).toBeGreaterThan(0);
  });

  it('cutout 0 is no Cutout; the square is a pure function of (seed, epoch, index)', () => {
    expect(assembleBatch(split, indices, { seed: 1, epoch: 0, augment: true, cutout: 0 }).x).toEqual(assembleBatch(split, indices, { seed: 1, epoch: 0, augment: true }).x);
    expect(sampleAugmentation(1, 4, 9, 8)).toEqual(sampleAugmentation(1, 4, 9, 8));
    expect(sampleAugmentation(1, 4, 9, 8)).not.toEqual(sampleAugmentation(1, 5, 9, 8));
  });

  it('a side outside [0, 32] or not an integer is refused, naming it', () => {
    for (const bad of [-1, 33, 2.5, Number.NaN]) expect(() => sampleAugmentation(0, 0, 0, bad)).toThrow(`cutout ${bad}`);
  });
});
