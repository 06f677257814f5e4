/**
 * The checkpoint commands of the built CLI on a real (tiny) run: eval, prune, fine-tuning a pruned
 * checkpoint with start --from, export, report, and the clear exit-2 errors for bad input.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { configHash, loadCheckpoint, parseConfig } from '@svd-train/core';
import { ROOT, finalCheckpointPath, freePort, requireBuild, runCoord, startCoordinator, syntheticData, tempDir, tinyRunFlags } from './harness.js';

describe('svd-coord eval / prune / export / report', () => {
  let out: string;
  let data: string;
  let ckpt: string;
  let pruned: string | null = null;
  let tunedCkpt: string | null = null;

  beforeAll(async () => {
    requireBuild();
    // 16 test images, of which the run evaluates 12 (--limit-test 12); --data given relative.
    data = syntheticData(24, 16);
    out = tempDir();
    const port = await freePort();
    const c = startCoordinator([...tinyRunFlags({ data: relative(ROOT, data), out, port, epochs: 1, limitTrain: 12, batch: 12 }), '--spawn', '1']);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    ckpt = finalCheckpointPath(out);
  });

  it('start wrote config.json, metrics.jsonl and report.html', () => {
    for (const f of ['config.json', 'metrics.jsonl', 'report.html']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).configHash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('config.json and the checkpoint keep --data resolved to an absolute path (it was given relative)', () => {
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).data).toBe(data);
    expect(loadCheckpoint(ckpt).config.data).toBe(data);
  });

  it('eval of a run folder uses its latest checkpoint and says so; by default the whole test set, with a note about the run\'s --limit-test', async () => {
    const r = await runCoord(['eval', out]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`${out} is a folder: using its latest checkpoint, ${ckpt}`);
    expect(r.out).toMatch(/the training run evaluated only the first 12 test images \(--limit-test 12\); this uses all 16\. Pass --limit-test 12/);
    expect(r.out).toMatch(/test accuracy \d+\.\d\d% \(\d+\/16\)/);
  });

  it('eval of a folder without checkpoints, or of a model.json, exits 2 naming it and the fix (and never says to delete the file)', async () => {
    const empty = tempDir();
    const r = await runCoord(['eval', empty]);
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain(`"${empty}" is a folder without checkpoints; expected a checkpoint file`);
    const modelJson = join(tempDir(), 'model.json');
    writeFileSync(modelJson, JSON.stringify({ modelTopology: {}, weightsManifest: [] }));
    const m = await runCoord(['eval', modelJson]);
    expect(m.code, m.out).toBe(2);
    expect(m.out, m.out).toContain(`${modelJson} is not an svd-train checkpoint`);
    expect(m.out, m.out).not.toMatch(/delete/i);
  });

  it('start --resume of a finished run says so and exits 0 without waiting for workers; config.json takes its run-local settings', async () => {
    const port = await freePort();
    const before = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    const r = startCoordinator([...tinyRunFlags({ data: relative(ROOT, data), out, port, epochs: 1, limitTrain: 12, batch: 12 }), '--resume', '--keep-checkpoints', '7']);
    expect(await r.exited, r.output().slice(-2000)).toBe(0);
    expect(r.output()).toMatch(/--resume: the run in .* already finished: .* is at step 1 of 1 \(1 epochs\); nothing to do/);
    const after = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    // The same run (hash), with the settings of the start that found it finished.
    expect(after.configHash).toBe(before.configHash);
    expect([before.keepCheckpoints, after.keepCheckpoints, after.port, after.resume]).toEqual([3, 7, port, true]);
  });

  it('eval prints the test accuracy of the checkpoint', async () => {
    const r = await runCoord(['eval', ckpt, '--data', data, '--limit-test', '12']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/test accuracy \d+\.\d\d% \(\d+\/12\)/);
  });

  it('eval of several checkpoints prints each and their ensemble (two copies of one model: the same accuracy), each as eval of it alone', async () => {
    const r = await runCoord(['eval', ckpt, out, '--data', data, '--limit-test', '12']);
    expect(r.code, r.out).toBe(0);
    const line = /svdckpt: test accuracy (\d+\.\d\d)% \((\d+)\/12\), loss (\d+\.\d+)/g;
    const several = [...r.out.matchAll(line)];
    const each = several.map((m) => m[1]);
    expect(each).toHaveLength(2);
    expect(each[0]).toBe(each[1]);
    // The several-model path computes accuracy and loss from each model's logits in JS; alone, eval
    // runs the tfjs evaluation the workers use. Same images, same count; the loss to float32 rounding.
    const alone = [...(await runCoord(['eval', ckpt, '--data', data, '--limit-test', '12'])).out.matchAll(line)];
    expect(alone).toHaveLength(1);
    expect(several[0][2]).toBe(alone[0][2]);
    expect(Math.abs(Number(several[0][3]) - Number(alone[0][3]))).toBeLessThan(2e-4);
    expect(r.out).toContain(`ensemble of 2 (mean softmax, what --teacher repeated distills from): test accuracy ${each[0]}%`);
  });

  it('prune prints the per-layer table and writes a smaller checkpoint', async () => {
    const dest = tempDir();
    const r = await runCoord(['prune', ckpt, '--energy', '0.05', '--out', dest]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/rankBefore\s+rankAfter/);
    // The run's own data folder is found: the pruned model's BN statistics are re-estimated on it.
    expect(r.out).toMatch(/batch-norm statistics re-estimated on \d+ training images from /);
    const m = r.out.match(/params (\d+) -> (\d+)/)!;
    expect(Number(m[2])).toBeLessThan(Number(m[1]));
    const files = readdirSync(dest).filter((f) => f.endsWith('.svdckpt'));
    expect(files.length).toBe(1);
    pruned = join(dest, files[0]!);
  });

  it('prune --out NAME.svdckpt writes exactly that file, even into the folder of the source checkpoint', async () => {
    const target = join(dirname(ckpt), 'pruned.svdckpt');
    const before = readdirSync(dirname(ckpt)).sort();
    const r = await runCoord(['prune', ckpt, '--energy', '0.05', '--out', target]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`pruned checkpoint written to ${target}`);
    expect(readdirSync(dirname(ckpt)).sort()).toEqual([...before, 'pruned.svdckpt'].sort());
    expect(loadCheckpoint(target).configHash).toBe(loadCheckpoint(pruned!).configHash);
    expect(loadCheckpoint(ckpt).optimizer.step).toBeGreaterThan(0); // the source is untouched
  });

  it('prune and average refuse an --out that would replace a checkpoint they read (the derived one keeps its step), and leave it intact', async () => {
    const before = readFileSync(ckpt);
    const r = await runCoord(['prune', ckpt, '--energy', '0.05', '--out', dirname(ckpt)]);
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain(`would replace ${ckpt}, a checkpoint this one is made from`);
    // Checked before any work, before even the ranks are compared (these two differ).
    const a = await runCoord(['average', ckpt, pruned!, '--out', pruned!]);
    expect(a.code, a.out).toBe(2);
    expect(a.out).toContain(`would replace ${pruned}`);
    expect(readFileSync(ckpt).equals(before)).toBe(true);
  });

  it('the pruned checkpoint carries its ranks in the config (hash included) and no optimizer state', () => {
    expect(pruned).not.toBeNull();
    const p = loadCheckpoint(pruned!);
    const orig = loadCheckpoint(ckpt);
    const ranks = p.config.ranks!;
    const sShapes = Object.fromEntries(p.params.filter((t) => t.name.endsWith('.s')).map((t) => [t.name.slice(0, -2), t.shape[0]]));
    expect(ranks).toEqual(sShapes);
    expect(Object.entries(ranks).some(([m, r]) => orig.params.find((t) => t.name === `${m}.s`)!.shape[0]! > r)).toBe(true);
    expect(p.configHash).toBe(configHash(parseConfig(p.config)));
    expect(p.configHash).not.toBe(orig.configHash);
    expect(p.optimizer.step).toBe(0);
    expect(Object.keys(p.optimizer.slots)).toEqual([]);
  });

  it('eval runs on the pruned checkpoint', async () => {
    const r = await runCoord(['eval', pruned!, '--data', data, '--limit-test', '12']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/test accuracy \d+\.\d\d% \(\d+\/12\)/);
  });

  it('start --from the pruned checkpoint fine-tunes with its ranks: a fresh run whose checkpoint keeps the pruned shapes', async () => {
    const p = loadCheckpoint(pruned!);
    const dest = tempDir();
    const port = await freePort();
    // 2 steps (24 images, batch 12): the original run had 1, so a continued step count would end at 3.
    const c = startCoordinator([...tinyRunFlags({ data, out: dest, port, epochs: 1, limitTrain: 24, batch: 12 }), '--spawn', '1', '--from', pruned!]);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    expect(c.output()).toContain('per-layer ranks of the checkpoint');
    tunedCkpt = finalCheckpointPath(dest);
    const tuned = loadCheckpoint(tunedCkpt);
    expect(tuned.step).toBe(2);
    const shapes = (ts: { name: string; shape: number[] }[]) => ts.map((t) => [t.name, ...t.shape]);
    expect(shapes(tuned.params)).toEqual(shapes(p.params));
    expect(shapes(tuned.buffers)).toEqual(shapes(p.buffers));
    expect(tuned.config.ranks).toEqual(p.config.ranks);
    expect(tuned.configHash).toBe(configHash(parseConfig(tuned.config)));
    // A fresh optimizer whose momentum buffers have the pruned shapes, and weights that moved.
    expect(tuned.optimizer.step).toBe(2);
    const momentum = tuned.optimizer.slots.momentum_buffer!;
    for (const t of p.params) expect([t.name, momentum[t.name]?.length]).toEqual([t.name, t.data.length]);
    const moved = tuned.params.some((t, i) => t.data.some((v, j) => v !== p.params[i]!.data[j]));
    expect(moved).toBe(true);
    expect(JSON.parse(readFileSync(join(dest, 'config.json'), 'utf8')).ranks).toEqual(p.config.ranks);
  });

  it('average of the pruned checkpoint and its fine-tuned one: the mean of the parameters, BN statistics re-estimated, a checkpoint eval takes', async () => {
    const dest = join(tempDir(), 'avg.svdckpt');
    // Newest last or first: the model and config are the newest checkpoint's either way.
    const r = await runCoord(['average', tunedCkpt!, pruned!, '--out', dest, '--bn-images', '20']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('averaged the parameters of 2 checkpoints');
    expect(r.out).toContain('batch-norm statistics re-estimated on 20 training images');
    expect(r.out).toContain(`averaged checkpoint written to ${dest}`);
    const [a, b, got] = [loadCheckpoint(pruned!), loadCheckpoint(tunedCkpt!), loadCheckpoint(dest)];
    expect(got.config.ranks).toEqual(b.config.ranks);
    expect(got.configHash).toBe(configHash(parseConfig(got.config)));
    expect(got.optimizer.step).toBe(0);
    expect(got.metrics?.averagedFrom).toEqual([tunedCkpt, pruned]);
    let off = 0;
    got.params.forEach((p, i) => p.data.forEach((v, j) => void (off += v === Math.fround((a.params[i]!.data[j]! + b.params[i]!.data[j]!) / 2) ? 0 : 1)));
    expect(off).toBe(0);
    // Re-estimated, not the mean of the running statistics.
    const meanOfBuffers = got.buffers.every((t, i) => t.data.every((v, j) => v === Math.fround((a.buffers[i]!.data[j]! + b.buffers[i]!.data[j]!) / 2)));
    expect(meanOfBuffers).toBe(false);
    const e = await runCoord(['eval', dest, '--data', data, '--limit-test', '12']);
    expect(e.code, e.out).toBe(0);
  });

  it('average refuses checkpoints of other ranks and a single checkpoint with exit 2, naming them', async () => {
    const mixed = await runCoord(['average', ckpt, pruned!, '--out', join(tempDir(), 'x.svdckpt')]);
    expect(mixed.code, mixed.out).toBe(2);
    expect(mixed.out).toContain('CHECKPOINT_CONFIG_MISMATCH');
    expect(mixed.out).toMatch(/\S+ holds (\S+) \[[\d, ]+\] where \S+ holds \1 \[[\d, ]+\]; expected the same tensors/);
    const single = await runCoord(['average', ckpt]);
    expect(single.code, single.out).toBe(2);
    expect(single.out).toContain(`names only ${ckpt}`);
    const bad = await runCoord(['average', out, '--last', '0']);
    expect(bad.code, bad.out).toBe(2);
    expect(bad.out).toContain('--last "0" is not valid; expected a whole number of checkpoints >= 1 per folder, e.g. 10. Fix: e.g. --last 10.');
    const images = await runCoord(['average', out, '--bn-images', 'all']);
    expect(images.code, images.out).toBe(2);
    expect(images.out).toContain('--bn-images "all" is not valid');
  });

  it('start --from a pruned checkpoint with --ranks that do not fit it is refused, naming the tensor and the fix', async () => {
    const fc = loadCheckpoint(pruned!).config.ranks!.fc!;
    const port = await freePort();
    const args = [...tinyRunFlags({ data, out: tempDir(), port, epochs: 1, limitTrain: 12, batch: 12 }), '--from', pruned!, '--ranks', `fc=${fc === 1 ? 2 : fc - 1}`];
    const r = await runCoord(['start', ...args]);
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain('CHECKPOINT_CONFIG_MISMATCH');
    // User ranks replace the checkpoint's (layers not listed are full rank), so stem.0 is the first misfit.
    expect(r.out).toMatch(/parameter stem\.0\.U has shape \[\d+, \d+\] in the checkpoint, the model of this config has \[16, 16\]/);
    expect(r.out).toContain('no --ranks');
  });

  it('export --stock of the full-rank model writes one plain Conv2D per SVD conv: the plain ResNet-20\'s MACs and weights', async () => {
    const dest = tempDir();
    const r = await runCoord(['export', ckpt, '--out', dest, '--stock']);
    expect(r.code, r.out).toBe(0);
    expect(existsSync(join(dest, 'model.json'))).toBe(true);
    const json = readFileSync(join(dest, 'model.json'), 'utf8');
    expect(json).not.toContain('SVDConv2D');
    expect(json).not.toMatch(/"name":"[^"]*_v"/);
    // The plain ResNet-20 costs 40,813,184 MACs per image (macs.test.ts).
    expect(r.out).toContain('40.81M MACs per image');
    const folded = tempDir();
    const f = await runCoord(['export', ckpt, '--out', folded, '--stock', '--fold-bn']);
    expect(f.code, f.out).toBe(0);
    expect(readFileSync(join(folded, 'model.json'), 'utf8')).not.toContain('BatchNormalization');
  });

  it('prune --energy 0 changes no number: every rank, parameter count, MAC count and form stays', async () => {
    const dest = join(tempDir(), 'e0.svdckpt');
    const r = await runCoord(['prune', ckpt, '--energy', '0', '--out', dest]);
    expect(r.code, r.out).toBe(0);
    // No rank removed, so no batch-norm re-estimation either: weights and BN statistics as trained.
    expect(r.out).not.toContain('re-estimated');
    const [src, got] = [loadCheckpoint(ckpt), loadCheckpoint(dest)];
    expect(got.params).toEqual(src.params);
    expect(got.buffers).toEqual(src.buffers);
    const rows = r.out.split('\n').filter((l) => /^(stem|layers|fc)/.test(l)).map((l) => l.trim().split(/\s+/));
    expect(rows.length).toBe(22);
    // name rankBefore rankAfter paramsBefore paramsAfter MACsBefore MACsAfter formBefore formAfter
    for (const c of rows) expect([c[0], c[1], c[3], c[5], c[7]]).toEqual([c[0], c[2], c[4], c[6], c[8]]);
    const whole = r.out.match(/MACs\/image (\d+) \(([\d.]+)% of plain resnet20\) -> (\d+) \(([\d.]+)%\)/)!;
    expect(whole[1]).toBe(whole[3]);
    expect(whole[2]).toBe('100.0');
  });

  it('prune --macs n prunes at the smallest energy that meets the budget, and says which', async () => {
    const dest = join(tempDir(), 'budget.svdckpt');
    // Between full rank (40.81M) and the one-value-per-layer floor: 20M MACs per image.
    const r = await runCoord(['prune', ckpt, '--macs', '20e6', '--out', dest]);
    expect(r.code, r.out).toBe(0);
    const said = r.out.match(/--macs 20000000: energy ([\d.e-]+) is the smallest that prunes to at most that \((\d+) MACs per image\)/)!;
    expect(said, r.out).not.toBeNull();
    const whole = r.out.match(/MACs\/image (\d+) \([\d.]+% of plain resnet20\) -> (\d+) /)!;
    expect(Number(whole[2])).toBe(Number(said[2]));
    expect(Number(whole[2])).toBeLessThanOrEqual(20e6);
    // The same energy through --energy gives the same pruned model.
    const again = join(tempDir(), 'energy.svdckpt');
    const e = await runCoord(['prune', ckpt, '--energy', said[1], '--out', again]);
    expect(e.code, e.out).toBe(0);
    expect(loadCheckpoint(again).params.map((p) => p.shape)).toEqual(loadCheckpoint(dest).params.map((p) => p.shape));
  });

  it('prune --macs n --mac-weight a: the budget met with the energy shared out by cost, each layer\'s share shown', async () => {
    const dest = join(tempDir(), 'weighted.svdckpt');
    const r = await runCoord(['prune', ckpt, '--macs', '20e6', '--mac-weight', '0.5', '--out', dest]);
    expect(r.code, r.out).toBe(0);
    const said = r.out.match(/--macs 20000000: energy ([\d.e-]+) is the smallest that prunes to at most that \((\d+) MACs per image\)/)!;
    expect(said, r.out).not.toBeNull();
    expect(Number(said[2])).toBeLessThanOrEqual(20e6);
    expect(r.out).toContain('MAC weight 0.5: each layer gives up e·(its MACs per rank / the costliest layer\'s)^0.5 of its energy');
    // The table's energy column: the costliest layers give up e, the cheapest (fc) less.
    const header = r.out.split('\n').find((l) => l.startsWith('name'))!;
    expect(header.split(/\s+/).slice(0, 3)).toEqual(['name', 'energy', 'rankBefore']);
    const fc = r.out.split('\n').find((l) => /^fc\s/.test(l))!;
    expect(Number(fc.split(/\s+/)[1])).toBeLessThan(Number(said[1]));
    const again = join(tempDir(), 'weighted-energy.svdckpt');
    const e = await runCoord(['prune', ckpt, '--energy', said[1], '--mac-weight', '0.5', '--out', again]);
    expect(e.code, e.out).toBe(0);
    expect(loadCheckpoint(again).params.map((p) => p.shape)).toEqual(loadCheckpoint(dest).params.map((p) => p.shape));
  });

  it('report rewrites report.html with plots and the spectra of the latest checkpoint', async () => {
    const r = await runCoord(['report', out]);
    expect(r.code, r.out).toBe(0);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect((html.match(/<svg /g) ?? []).length).toBeGreaterThanOrEqual(8);
    expect(html).toContain('rank @0.01');
    expect(html).toContain('million MACs per image (FLOPs = 2·MACs)');
    expect(html).toContain('plain resnet20');
  });

  it('bad input exits 2 with a message naming the value and the fix, no stack trace', async () => {
    const bad = join(tempDir(), 'bad.svdckpt');
    writeFileSync(bad, 'not a checkpoint');
    for (const [args, needle] of [
      [['eval', bad], 'CHECKPOINT_CORRUPT'],
      [['prune', ckpt, '--energy', 'lots'], '--energy "lots"'],
      [['prune', ckpt, '--macs', '-5'], '--macs "-5"'],
      [['prune', ckpt], 'give one of --energy <e>'],
      [['prune', ckpt, '--energy', '0.1', '--macs', '1e7'], 'not both'],
      [['prune', ckpt, '--macs', '10'], 'below what pruning can reach'],
      [['start', '--model', 'resnet7', '--out', tempDir()], 'resnet7'],
      [['report', '/no/such/run'], '/no/such/run'],
    ] as const) {
      const r = await runCoord([...args]);
      expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(2);
      expect(r.out).toContain(needle);
      expect(r.out).not.toMatch(/\n\s+at /);
    }
  });
});
