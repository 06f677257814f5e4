import { describe, it, expect } from 'vitest';
import { SvdTrainError, type EvalResultMessage, type GradientsMessage } from '@svd-train/core';
import { JobScheduler, MAX_SLICE_FAULTS, OUTLIER_RATIO, type JobMeta, type Task } from './job-scheduler.js';

/** A worker as the scheduler sees it: a name (no socket anywhere in these tests). */
interface W {
  readonly name: string;
}

interface Sent {
  w: W;
  t: Task<W>;
  meta: JobMeta;
}

const meta = (step: number): JobMeta => ({ step, epoch: 0, lr: 0.1, split: 'train' });
const range = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

function setup(names: string[], minWorkers = 1, evalSlice?: number) {
  const live: W[] = names.map((name) => ({ name }));
  const sent: Sent[] = [];
  const logs: string[] = [];
  const dropped: { w: W; why: string }[] = [];
  const fatal: SvdTrainError[] = [];
  const s: JobScheduler<W> = new JobScheduler<W>({
    live: () => live,
    minWorkers,
    send: (w, t, m) => sent.push({ w, t, meta: m }),
    // As the coordinator does: the dropped worker leaves `live` first, then its work is released.
    dropOutlier: (w, why) => {
      dropped.push({ w, why });
      leave(w);
    },
    onFatal: (e) => fatal.push(e),
    log: (_level, msg) => logs.push(msg),
    ...(evalSlice ? { evalSlice } : {}),
    now: () => 0,
  });
  const byName = (name: string): W => {
    const w = live.find((x) => x.name === name);
    if (!w) throw new Error(`no live worker ${name}`);
    return w;
  };
  const leave = (w: W): void => {
    live.splice(live.indexOf(w), 1);
    s.release(w);
  };
  return { s, live, sent, logs, dropped, fatal, byName, leave };
}

/** The answer a healthy worker gives to `t`: n = its sample count, a gradient of size `scale`. */
function answer(t: Task<W>, m: JobMeta, scale = 1): GradientsMessage | EvalResultMessage {
  const n = t.indices.length;
  if (t.kind === 'eval') return { type: 'eval-result', evalId: t.id, n, correct: 0, lossSum: 0 };
  return { type: 'gradients', step: m.step, attempt: t.id, n, grads: [{ name: 'g', shape: [1], data: Float32Array.of(scale) }], buffers: [], loss: { ce: 0, orth: 0, sparsity: 0, total: 0 }, correct: 0, computeMs: 0 };
}

/** `w` answers its current task (validated as the coordinator does first). */
function reply(s: JobScheduler<W>, w: W, scale = 1): void {
  const t = s.currentTask(w);
  if (!t) throw new Error(`${w.name} has no task`);
  const msg = answer(t, meta(0), scale);
  s.expectedTask(w, msg);
  s.complete(w, msg);
}

/** Every index of a step, from the answered slices, in order. */
const covered = (answers: { indices: Int32Array }[]): number[] => answers.flatMap((a) => [...a.indices]);

describe('JobScheduler assignment', () => {
  it('step of 10 samples over 3 workers: 3 contiguous slices [0..4) [4..7) [7..10), one per worker in join order, covering the batch exactly once', async () => {
    const { s, sent, byName } = setup(['w0', 'w1', 'w2']);
    const done = s.runStep(range(10), meta(0));
    expect(sent.map((x) => [x.w.name, [...x.t.indices]])).toEqual([
      ['w0', [0, 1, 2, 3]],
      ['w1', [4, 5, 6]],
      ['w2', [7, 8, 9]],
    ]);
    expect(s.slicesPerStep).toBe(3);
    for (const name of ['w2', 'w0', 'w1']) reply(s, byName(name));
    const answers = await done;
    expect(covered(answers)).toEqual([...range(10)]);
    expect(answers.map((a) => a.worker?.name)).toEqual(['w0', 'w1', 'w2']);
  });

  it('slices per step never drop: with 2 of 3 workers left, step 1 still has 3 slices and w0 computes two, one at a time', async () => {
    const { s, sent, byName, leave } = setup(['w0', 'w1', 'w2']);
    const first = s.runStep(range(9), meta(0));
    for (const name of ['w0', 'w1', 'w2']) reply(s, byName(name));
    await first;
    leave(byName('w2'));
    sent.length = 0;
    const second = s.runStep(range(9), meta(1));
    // Round-robin over [w0, w1]: slice 2 waits in w0's queue until w0 answers slice 0.
    expect(sent.map((x) => [x.w.name, x.t.offset])).toEqual([
      ['w0', 0],
      ['w1', 3],
    ]);
    reply(s, byName('w0'));
    expect(sent.map((x) => [x.w.name, x.t.offset])).toEqual([
      ['w0', 0],
      ['w1', 3],
      ['w0', 6],
    ]);
    reply(s, byName('w0'));
    reply(s, byName('w1'));
    const answers = await second;
    expect(answers).toHaveLength(3);
    expect(covered(answers)).toEqual([...range(9)]);
  });

  it('more live workers at a later step raise the slice count (and say so)', async () => {
    const { s, live, byName, logs } = setup(['w0']);
    const first = s.runStep(range(4), meta(0));
    reply(s, byName('w0'));
    await first;
    live.push({ name: 'w1' });
    const second = s.runStep(range(4), meta(1));
    expect(s.slicesPerStep).toBe(2);
    expect(logs.some((l) => /from step 1 on, each step is split into 2 sub-batches instead of 1/.test(l))).toBe(true);
    reply(s, byName('w0'));
    reply(s, byName('w1'));
    expect(covered(await second)).toEqual([0, 1, 2, 3]);
  });

  it('a batch smaller than the slice count: the empty slice is answered without a worker (n=0)', async () => {
    const { s, sent, byName } = setup(['w0', 'w1', 'w2']);
    const done = s.runStep(range(2), meta(0));
    expect(sent.map((x) => x.w.name)).toEqual(['w0', 'w1']);
    reply(s, byName('w0'));
    reply(s, byName('w1'));
    const answers = await done;
    expect(answers.map((a) => [a.worker?.name ?? null, a.result.n])).toEqual([
      ['w0', 1],
      ['w1', 1],
      [null, 0],
    ]);
  });

  it('evaluation is split over the live workers and resolves with every eval result', async () => {
    const { s, sent, byName } = setup(['w0', 'w1']);
    const done = s.runEval(range(7), { ...meta(0), split: 'test' });
    expect(sent.every((x) => x.t.kind === 'eval' && x.meta.split === 'test')).toBe(true);
    reply(s, byName('w1'));
    reply(s, byName('w0'));
    const answers = await done;
    expect(answers.map((a) => a.result.n)).toEqual([4, 3]);
  });

  it('evaluation comes in slices of at most evalSlice samples, each worker taking its share one slice at a time, so no request outlasts the step timeout', async () => {
    const { s, sent, byName } = setup(['w0', 'w1'], 1, 4);
    const done = s.runEval(range(18), { ...meta(0), split: 'test' });
    // 18 samples in 5 slices of at most 4 (4, 4, 4, 3, 3), round-robin: each worker gets its first now.
    expect(sent.map((x) => [x.w.name, x.t.indices.length])).toEqual([
      ['w0', 4],
      ['w1', 4],
    ]);
    for (let k = 0; k < 5; k++) reply(s, byName(k % 2 === 0 ? 'w0' : 'w1'));
    const answers = await done;
    expect(answers.map((a) => a.result.n)).toEqual([4, 4, 4, 3, 3]);
    expect(covered(answers)).toEqual([...range(18)]);
  });

  it('is deterministic: the same joins, answers and drops give the same sends (worker, offset, indices, attempt id)', async () => {
    const trace = async (): Promise<string[]> => {
      const { s, sent, byName, leave } = setup(['w0', 'w1', 'w2']);
      const a = s.runStep(range(12), meta(0));
      reply(s, byName('w1'));
      leave(byName('w2')); // its slice goes to w1, the idle one
      reply(s, byName('w0'));
      reply(s, byName('w1'));
      await a;
      return sent.map((x) => `${x.w.name}:${x.t.id}:${x.t.offset}:${[...x.t.indices].join(',')}`);
    };
    const first = await trace();
    expect(first.length).toBe(4);
    expect(await trace()).toEqual(first);
  });
});

describe('JobScheduler re-assignment', () => {
  it('a dropped worker\'s slice goes whole, under a new attempt id, to the least-busy survivor; every sample is answered exactly once', async () => {
    const { s, sent, byName, leave, logs } = setup(['w0', 'w1', 'w2']);
    const done = s.runStep(range(10), meta(3));
    const lost = sent[1].t;
    expect(lost.indices).toEqual(Int32Array.of(4, 5, 6));
    reply(s, byName('w0')); // w0 idle, w2 busy: w0 is the least busy
    const w1 = byName('w1');
    leave(w1);
    const retry = sent[3];
    expect(retry.w.name).toBe('w0');
    expect([...retry.t.indices]).toEqual([4, 5, 6]);
    expect(retry.t.offset).toBe(lost.offset);
    expect(retry.t.id).not.toBe(lost.id);
    expect(logs).toContain('worker w1 left: re-assigned 1 slice(s), 3 sample(s) of step 3, whole, to w0');
    // The dropped worker's answer is no longer expected from it.
    expect(() => s.expectedTask(w1, answer(lost, meta(3)))).toThrow(/asked for nothing/);
    reply(s, byName('w0'));
    reply(s, byName('w2'));
    const answers = await done;
    expect(covered(answers)).toEqual([...range(10)]);
    expect(answers.map((a) => a.worker?.name)).toEqual(['w0', 'w0', 'w2']);
  });

  it('ties for least busy go to the first worker in join order', async () => {
    const { s, sent, byName, leave } = setup(['w0', 'w1', 'w2']);
    const done = s.runStep(range(6), meta(0));
    reply(s, byName('w0'));
    reply(s, byName('w1'));
    leave(byName('w2'));
    expect(sent[3].w.name).toBe('w0');
    reply(s, byName('w0'));
    expect(covered(await done)).toEqual([...range(6)]);
  });

  it('with fewer than minWorkers left the slice is parked, and sent whole (least busy, join order) when a worker joins', async () => {
    const { s, sent, live, byName, leave, logs } = setup(['w0', 'w1'], 2);
    const done = s.runStep(range(4), meta(0));
    reply(s, byName('w0'));
    leave(byName('w1'));
    expect(sent).toHaveLength(2);
    expect(logs.some((l) => /1 worker\(s\) left, fewer than --min-workers 2; waiting for workers/.test(l))).toBe(true);
    const w3 = { name: 'w3' };
    live.push(w3);
    s.joined(w3);
    // w0 and w3 are both idle: the tie goes to w0, first in join order.
    expect(sent[2].w.name).toBe('w0');
    expect([...sent[2].t.indices]).toEqual([2, 3]);
    reply(s, byName('w0'));
    expect(covered(await done)).toEqual([0, 1, 2, 3]);
  });
});

describe('JobScheduler faults', () => {
  it(`a gradient ${OUTLIER_RATIO}x+ the median of the others: its worker is dropped and its slice recomputed elsewhere`, async () => {
    const { s, sent, byName, dropped, fatal } = setup(['w0', 'w1', 'w2']);
    const done = s.runStep(range(9), meta(0));
    reply(s, byName('w0'));
    reply(s, byName('w1'), OUTLIER_RATIO * 10);
    reply(s, byName('w2'));
    expect(dropped.map((d) => d.w.name)).toEqual(['w1']);
    expect(dropped[0].why).toMatch(/L2 norm 1\.00e\+4, 1\.0e\+4 times the median/);
    expect(sent[3].w.name).toBe('w0');
    expect([...sent[3].t.indices]).toEqual([3, 4, 5]);
    reply(s, byName('w0'));
    const answers = await done;
    expect(answers.map((a) => a.worker?.name)).toEqual(['w0', 'w0', 'w2']);
    expect(answers.every((a) => a.result.grads[0].data[0] === 1)).toBe(true);
    expect(fatal).toHaveLength(0);
  });

  it(`${MAX_SLICE_FAULTS} numeric faults on one slice: DIVERGED, the step is rejected and nothing is re-assigned any more`, async () => {
    const { s, sent, byName, leave, fatal } = setup(['w0', 'w1', 'w2', 'w3']);
    const done = s.runStep(range(8), meta(5));
    reply(s, byName('w1'));
    reply(s, byName('w2'));
    reply(s, byName('w3'));
    // Slice 0 fails on w0, then on whoever takes it next.
    let w = byName('w0');
    for (let k = 0; k < MAX_SLICE_FAULTS; k++) {
      expect(fatal).toHaveLength(0);
      expect(s.countFault(w, `worker ${w.name}: NaN`)).toBe(true);
      if (k < MAX_SLICE_FAULTS - 1) {
        leave(w);
        w = sent[sent.length - 1].w;
        expect([...sent[sent.length - 1].t.indices]).toEqual([0, 1]);
      }
    }
    await expect(done).rejects.toMatchObject({ code: 'DIVERGED' });
    expect(fatal.map((e) => e.code)).toEqual(['DIVERGED']);
    expect(fatal[0].message).toMatch(/step 5 .* failed 3 time\(s\), 3 times on the same slice of 2 samples/);
    const before = sent.length;
    leave(sent[sent.length - 1].w);
    expect(sent).toHaveLength(before);
  });

  it('refuses answers nobody asked for (ROUND_MISMATCH) and an eval result of the wrong size', async () => {
    const { s, sent, byName } = setup(['w0']);
    const stray = { name: 'stray' };
    expect(() => s.expectedTask(stray, { type: 'eval-result', evalId: 1, n: 0, correct: 0, lossSum: 0 })).toThrow(SvdTrainError);
    const done = s.runEval(range(3), meta(0));
    const t = sent[0].t;
    expect(() => s.expectedTask(byName('w0'), { type: 'eval-result', evalId: t.id, n: 2, correct: 0, lossSum: 0 })).toThrow(/evaluated n=2 .* given 3 samples/);
    expect(() => s.expectedTask(byName('w0'), answer({ ...t, kind: 'step', result: null, norm: 0 }, meta(0)))).toThrow(/sent gradients but was asked for eval/);
    reply(s, byName('w0'));
    expect((await done).map((a) => a.result.n)).toEqual([3]);
  });
});
