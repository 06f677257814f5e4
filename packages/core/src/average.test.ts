import { describe, expect, it } from 'vitest';
import { averageTensors, type AverageInput } from './average.js';
import { isSvdTrainError } from './errors.js';

const t = (name: string, shape: number[], values: number[]) => ({ name, shape, data: Float32Array.from(values) });

function input(path: string, u: number[], s: number[], mean: number[]): AverageInput {
  return { path, params: [t('l.U', [2, 2], u), t('l.s', [2], s)], buffers: [t('bn.running_mean', [2], mean)] };
}

function errorOf(f: () => unknown): { code: string; message: string } {
  try {
    f();
  } catch (e) {
    if (isSvdTrainError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected an error');
}

describe('averageTensors', () => {
  it('is the element-wise mean of every parameter and buffer, in the inputs\' order and shapes', () => {
    const r = averageTensors([input('a', [1, 2, 3, 4], [1, 0], [0, 0]), input('b', [3, 2, 1, 0], [0.5, 1], [2, 4]), input('c', [2, 2, 2, 2], [1.5, 2], [1, -1])]);
    expect(r.params.map((p) => [p.name, p.shape, Array.from(p.data)])).toEqual([
      ['l.U', [2, 2], [2, 2, 2, 2]],
      ['l.s', [2], [1, 1]],
    ]);
    expect(Array.from(r.buffers[0]!.data)).toEqual([1, 1]);
  });

  it('accumulates in float64: the mean of many copies of a value is that value', () => {
    const v = 0.1;
    const many = Array.from({ length: 1000 }, (_, i) => input(`c${i}`, [v, v, v, v], [v, v], [v, v]));
    expect(averageTensors(many).params[0]!.data[0]).toBe(Math.fround(v));
  });

  it('does not touch its inputs', () => {
    const a = input('a', [1, 2, 3, 4], [1, 0], [0, 0]);
    averageTensors([a, input('b', [3, 2, 1, 0], [0.5, 1], [2, 4])]);
    expect(Array.from(a.params[0]!.data)).toEqual([1, 2, 3, 4]);
  });

  it('refuses checkpoints of other shapes (ranks) or other tensors, naming the file, the tensor and the fix', () => {
    const a = input('a.svdckpt', [1, 2, 3, 4], [1, 0], [0, 0]);
    const pruned: AverageInput = { ...a, path: 'p.svdckpt', params: [t('l.U', [2, 1], [1, 2]), t('l.s', [1], [1])] };
    const e = errorOf(() => averageTensors([a, pruned]));
    expect(e.code).toBe('CHECKPOINT_CONFIG_MISMATCH');
    expect(e.message).toContain('p.svdckpt holds l.U [2, 1] where a.svdckpt holds l.U [2, 2]');
    expect(e.message).toContain('Fix: average checkpoints of one run');
    const renamed: AverageInput = { ...a, path: 'r.svdckpt', buffers: [t('bn.running_var', [2], [1, 1])] };
    expect(errorOf(() => averageTensors([a, renamed])).message).toContain('r.svdckpt holds bn.running_var [2]');
    const fewer: AverageInput = { ...a, path: 'f.svdckpt', params: a.params.slice(0, 1) };
    expect(errorOf(() => averageTensors([a, fewer])).message).toContain('f.svdckpt has 1 params tensors, a.svdckpt has 2');
  });

  it('needs at least two checkpoints', () => {
    expect(errorOf(() => averageTensors([input('only.svdckpt', [1, 2, 3, 4], [1, 0], [0, 0])]))).toMatchObject({ code: 'CLI_USAGE', message: expect.stringContaining('only.svdckpt') });
    expect(errorOf(() => averageTensors([])).code).toBe('CLI_USAGE');
  });
});
