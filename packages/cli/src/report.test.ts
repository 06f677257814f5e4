import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isSvdTrainError, parseConfig } from '@svd-train/core';
import { buildResNetForConfig, countMacs, pruneByEnergy } from '@svd-train/layers';
import { macsAtEnergies } from './commands/report.js';
import { phaseTimes, renderPipeline, type PipelineSummary } from './report-pipeline.js';
import { readMetrics, renderReport, spectraOf, writeReport } from './report.js';
import { ema, emaSpan, logTicks, niceTicks, tickLabels } from './plot-scales.js';
import { linePlot } from './svg-plot.js';

describe('niceTicks', () => {
  it('[0, 1] -> 1-2-5 steps of 0.2', () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
  });
  it('labels keep enough digits to stay distinct', () => {
    expect(tickLabels([119.905, 119.91, 119.915])).toEqual(['119.905', '119.91', '119.915']);
  });
});

describe('logTicks', () => {
  it('a loss axis 0.05..2 gets 1-2-5 labels, not just two decades', () => {
    const { major, minor } = logTicks(Math.log10(0.05), Math.log10(2));
    expect(major).toEqual([0.05, 0.1, 0.2, 0.5, 1, 2]);
    expect(minor).toEqual([]);
    expect(tickLabels(major)).toEqual(['0.05', '0.1', '0.2', '0.5', '1', '2']);
  });
  it('less than a decade (1.2..3.5) still gets at least three labels', () => {
    expect(logTicks(Math.log10(1.5), Math.log10(9)).major).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(logTicks(Math.log10(1.2), Math.log10(3.5)).major).toEqual([1.5, 2, 2.5, 3, 3.5]);
    expect(logTicks(Math.log10(1.1), Math.log10(1.9)).major).toEqual([1.2, 1.4, 1.6, 1.8]);
  });
  it('five decades: every decade labelled, 2..9 minor ticks; eleven decades thinned to at most 8 labels', () => {
    const five = logTicks(-4, 1);
    expect(five.major).toEqual([1e-4, 1e-3, 0.01, 0.1, 1, 10]);
    expect(five.minor).toContain(0.2);
    expect(five.minor).toContain(9e-4);
    const wide = logTicks(-10, 1);
    expect(wide.major.length).toBeLessThanOrEqual(8);
    expect(wide.major.length).toBeGreaterThanOrEqual(4);
    expect(wide.major).toContain(1);
  });
});

describe('ema', () => {
  it('bias-corrected: starts at the first value, keeps a constant, lags a step by its span', () => {
    expect(ema([5, 5, 5], 10)).toEqual([5, 5, 5]);
    expect(ema([3, 1], 1)).toEqual([3, 1]); // span 1 = no smoothing
    const step = ema([0, 0, 0, 0, 10, 10, 10, 10, 10, 10], 3);
    expect(step[0]).toBe(0);
    expect(step[4]).toBeGreaterThan(0);
    expect(step[4]).toBeLessThan(10);
    expect(step[9]).toBeGreaterThan(step[5]!);
    expect(emaSpan(20)).toBe(1);
    expect(emaSpan(1000)).toBe(40);
  });
  it('a smooth series of 1000 noisy points: a faint raw path under its EMA, and the legend says so', () => {
    const pts = Array.from({ length: 1000 }, (_, i) => [i, 2 - i / 1000 + (i % 2 ? 0.3 : -0.3)] as [number, number]);
    const svg = linePlot([{ label: 'ce', points: pts, smooth: true }], { title: 'Loss', xLabel: 'step', yLabel: 'loss' });
    expect((svg.match(/<path /g) ?? []).length).toBe(2);
    expect(svg).toContain('stroke-opacity="0.25"');
    expect(svg).toContain('ce: EMA span 40 (raw faint)');
  });
});

describe('report', () => {
  it('skips a torn last line of metrics.jsonl', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rep-'));
    writeFileSync(join(dir, 'metrics.jsonl'), '{"kind":"step","step":0,"ce":2.3}\n{"kind":"st');
    expect(readMetrics(join(dir, 'metrics.jsonl'))).toEqual([{ kind: 'step', step: 0, ce: 2.3 }]);
    // torn last line followed only by blank lines is still the last line
    writeFileSync(join(dir, 'metrics.jsonl'), '{"kind":"step","step":0,"ce":2.3}\n{"kind":"st\n\n');
    expect(readMetrics(join(dir, 'metrics.jsonl'))).toEqual([{ kind: 'step', step: 0, ce: 2.3 }]);
  });

  it('a malformed line before the last is DATA_CORRUPT naming the file and the line number', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rep-'));
    const path = join(dir, 'metrics.jsonl');
    for (const bad of ['{"kind":"st', '[1,2]', 'null']) {
      writeFileSync(path, `{"kind":"step","step":0,"ce":2.3}\n\n${bad}\n{"kind":"step","step":1,"ce":2.2}\n`);
      let err: unknown;
      try {
        readMetrics(path);
      } catch (e) {
        err = e;
      }
      expect(isSvdTrainError(err, 'DATA_CORRUPT'), String(err)).toBe(true);
      expect((err as Error).message).toContain(`${path} line 3 of 4 is malformed`);
      expect((err as Error).message).toContain('Fix:');
    }
  });

  it('renders self-contained HTML with one line plot per metric and a path per series', () => {
    const records = [
      ...Array.from({ length: 20 }, (_, s) => ({ kind: 'step', step: s, epoch: 0, loss: { ce: 2 - s / 20, total: 2.2 - s / 20, orth: 0.1, sparsity: 0.05 }, trainAcc: s / 20, lr: 0.1 })),
      { kind: 'epoch', epoch: 0, step: 20, trainAcc: 0.5, testAcc: 0.45, testLoss: 1.5, effectiveRanks: { a: 3, b: 5 } },
    ];
    const html = renderReport({ title: 't', config: { lr: 0.1 }, records, spectra: spectraOf([{ name: 'layers.0.s', data: Float32Array.from([4, 2, 1]) }, { name: 'layers.0.U', data: new Float32Array(9) }]), macs: [{ label: 'plain resnet20', macs: 40.8e6 }, { label: 'full rank', macs: 40.8e6 }, { label: 'pruned e=0.01', macs: 2e7 }] });
    expect(html).not.toMatch(/<(script|link)[^>]+(src|href)=/); // no external assets
    expect(html).toContain('epoch 1: test accuracy 45.00%');
    expect(html).toContain('Regularizer terms');
    expect(html.split('Effective rank over training')[1]!.split('</svg>')[0]).toContain('>8<');
    expect(html).toContain('<td>layers.0</td><td>3</td>');
    expect(html).toContain('million MACs per image (FLOPs = 2·MACs)');
    expect(html).not.toMatch(/MFLOPs|FLOPs per image/);
    expect(html).toContain('<td>pruned e=0.01</td><td>20.00M</td><td>49.0%</td>');
    expect(html).toContain('No pipeline.json');
    expect((html.match(/<svg /g) ?? []).length).toBeGreaterThanOrEqual(8);
    expect(html).not.toContain('NaN');
    // nested loss terms (the coordinator's metrics format) are plotted, not dropped
    expect(html.split('Regularizer terms: singular-value sparsity')[1]!.split('</svg>')[0]).toContain('<path');
    // rank per layer: bars (full rank, rank kept), no line between layers
    const rank = html.split('>Rank per layer<')[1]!.split('</svg>')[0]!;
    expect(rank).not.toContain('<path');
    expect((rank.match(/<rect [^>]*><title>/g) ?? []).length).toBe(2);
    expect(rank).toContain('<title>layers.0: full rank 3</title>');
    // the log loss axis has more than two labels
    const loss = html.split('>Loss<')[1]!.split('</svg>')[0]!;
    expect((loss.match(/text-anchor="end">/g) ?? []).length).toBeGreaterThanOrEqual(3);
  });

  it('writeReport writes runs/NAME/report.html and survives a run with no metrics', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rep-'));
    const out = writeReport(dir);
    expect(out).toBe(join(dir, 'report.html'));
    const html = readFileSync(out, 'utf8');
    expect(html).toContain('no data');
    // titled by the run's name, never by the absolute path of the machine that wrote it
    const name = dir.split('/').pop()!;
    expect(html).toContain(`<title>${name} · svd-train report</title>`);
    expect(html).toContain(`<h1>${name}</h1>`);
    expect(html).not.toContain(dir);
    // a pipeline's fine-tuning run is named after its parent run; notes name files relative to the run
    const ft = join(dir, 'finetune');
    mkdirSync(ft);
    writeFileSync(join(ft, 'config.json'), JSON.stringify({ model: 'resnet20' }));
    const ftHtml = readFileSync(writeReport(ft, { notes: [`Spectra and MACs from ${join(ft, 'checkpoints', 'ckpt-1.svdckpt')} (step 1).`] }), 'utf8');
    expect(ftHtml).toContain(`<h1>${name}/finetune · resnet20</h1>`);
    expect(ftHtml).toContain('Spectra and MACs from checkpoints/ckpt-1.svdckpt (step 1).');
    expect(ftHtml).not.toContain(dir);
  });

  // A pipeline fine-tuned 4 epochs: every pipeline-section test builds on it.
  const pt = (energy: number, acc: number, macs: number) => ({ energy, acc, loss: 1, macs, params: 1, exportParams: 2 });
  const base: PipelineSummary = {
    model: 'resnet20', energy: 0.05, testImages: 100, plain: { macs: 40e6, params: 274042 },
    trained: pt(0, 0.9, 40e6), pruned: pt(0.05, 0.6, 10e6), prunedCheckpoint: 'x', sweep: [pt(0, 0.9, 40e6), pt(0.05, 0.6, 10e6)],
    finetuned: { ...pt(0.05, 0.88, 10e6), epochs: 4, lr: 0.01, run: 'finetune' },
  };

  it('the pipeline section: before / after pruning / after fine-tuning, the accuracy-vs-MACs curve with the fine-tuned point marked', () => {
    const p: PipelineSummary = {
      ...base, sweep: [pt(0, 0.9, 40e6), pt(0.01, 0.85, 20e6), pt(0.05, 0.6, 10e6)], finetuned: { ...base.finetuned!, epochs: 2 },
    };
    const html = renderPipeline(p);
    expect(html).toContain('<td>trained, before pruning</td><td>90.00%</td><td>40.00M</td><td>100.0%</td>');
    expect(html).toContain('<td>after pruning at e=0.05 (no fine-tuning)</td><td>60.00%</td><td>10.00M</td><td>25.0%</td>');
    expect(html).toContain('<td>after fine-tuning 2 epoch(s), peak lr 0.01</td><td>88.00%</td>');
    const curve = html.split('Test accuracy vs MACs per image')[1]!.split('</svg>')[0]!;
    expect(curve).toContain('fine-tuned (e=0.05, 2 ep)');
    // The sweep is a line with a marker per point, the fine-tuned model and the pruned one single
    // points: 3 + 1 + 1 markers in the plot and one per marked series in the legend (sweep,
    // fine-tuned, pruned); the fine-tuned one is the large one.
    expect((curve.match(/<circle /g) ?? []).length).toBe(5 + 3);
    expect((curve.match(/<circle [^>]*r="6"/g) ?? []).length).toBe(1);
    expect(curve).toContain('fine-tuned 88.00%');
    expect(curve).toContain('>plain resnet20<');
    expect(renderReport({ title: 't', config: null, records: [], spectra: [], macs: [], pipeline: p })).toContain('Train → prune → fine-tune');
  });

  it('with --finetune-average: a row and a second large point for the average of the last epochs', () => {
    const html = renderPipeline({ ...base, averaged: { ...pt(0.05, 0.8912, 10e6), epochs: 3, run: 'finetune', checkpoint: 'finetune/averaged-last3.svdckpt' } });
    expect(html).toContain("<td>average of the fine-tuning's last 3 epochs (batch-norm statistics re-estimated)</td><td>89.12%</td><td>10.00M</td><td>25.0%</td>");
    const curve = html.split('Test accuracy vs MACs per image')[1]!.split('</svg>')[0]!;
    expect((curve.match(/<circle [^>]*r="6"/g) ?? []).length).toBe(2);
    expect(curve).toContain('averaged 89.12% (fine-tuned 88.00%)');
    // Not asked for, or too few epochs left (null): no row, no point.
    for (const averaged of [undefined, null]) expect(renderPipeline({ ...base, averaged })).not.toContain('average of');
  });

  it("each phase's time in its row and the total under the table; none in an older pipeline.json", () => {
    const html = renderPipeline({ ...base, seconds: { training: 1500, pruning: 190, finetuning: 3000 } });
    expect(html).toContain('<td>trained, before pruning</td><td>90.00%</td><td>40.00M</td><td>100.0%</td><td>2</td><td>25 min 0 s</td>');
    expect(html).toContain('<td>after pruning at e=0.05 (no fine-tuning)</td><td>60.00%</td><td>10.00M</td><td>25.0%</td><td>2</td><td>3 min 10 s</td>');
    expect(html).toContain('<td>88.00%</td><td>10.00M</td><td>25.0%</td><td>2</td><td>50 min 0 s</td>');
    expect(html).toContain('Time: training 25 min 0 s + pruning 3 min 10 s + fine-tuning 50 min 0 s = 1 h 18 min');
    const old = renderPipeline(base);
    expect(old).not.toContain('Time:');
    expect(old).toContain('<td>trained, before pruning</td><td>90.00%</td><td>40.00M</td><td>100.0%</td><td>2</td><td>–</td>');
  });

  it('a MAC-weighted prune says its weight in the stage row and the sweep table; 0 and older runs say nothing', () => {
    const html = renderPipeline({ ...base, macWeight: 0.5 });
    expect(html).toContain('<td>after pruning at e=0.05, MAC weight 0.5 (no fine-tuning)</td>');
    expect(html).toContain('<th>energy e, MAC weight 0.5</th>');
    for (const macWeight of [0, undefined]) expect(renderPipeline({ ...base, macWeight })).not.toContain('MAC weight');
  });
});

describe('phaseTimes', () => {
  it('lists the phases that ran, in order, says which have no time, and sums the rest', () => {
    expect(phaseTimes({ plain: 3600, training: 1800, pruning: 60, finetuning: 3000 })).toBe('plain 1 h 0 min + training 30 min 0 s + pruning 1 min 0 s + fine-tuning 50 min 0 s = 2 h 21 min');
    expect(phaseTimes({ training: null, pruning: 60 })).toBe('training not recorded + pruning 1 min 0 s = 1 min 0 s (of the phases with times)');
    expect(phaseTimes({ training: null, pruning: null })).toBe('');
    expect(phaseTimes(undefined)).toBe('');
  });
});

describe('report of a ResNet-20 run (22 SVD layers, 2 workers)', () => {
  // ResNet-20's SVD layers as the coordinator names them: stem, 9 blocks × 2 convs, 2 shortcuts, fc.
  const layers = ['stem.0', ...Array.from({ length: 9 }, (_, b) => [`layers.${b}.conv1`, `layers.${b}.conv2`, ...(b === 3 || b === 6 ? [`layers.${b}.shortcut.0`] : [])]).flat(), 'fc'];
  const width = (l: string) => (l === 'fc' ? 10 : /^layers\.[3-5]\./.test(l) ? 32 : /^layers\.[6-8]\./.test(l) ? 64 : 16);
  // s_i = 2^-i: each value holds 3/4 of the energy left, so the rank kept at e is the same for every
  // layer of at least that width (e=0.01 keeps 4, e=0.05 keeps 3); one sign flipped, as training can.
  const params = layers.flatMap((l) => [
    { name: `${l}.U`, data: new Float32Array(4) },
    { name: `${l}.s`, data: Float32Array.from({ length: width(l) }, (_, i) => (i === 1 ? -1 : 1) * 2 ** -i) },
  ]);
  const t0 = Date.parse('2026-11-29T02:00:00.000Z');
  const records = [
    ...Array.from({ length: 60 }, (_, s) => ({
      kind: 'step', step: s, epoch: s < 30 ? 0 : 1, lr: 0.1, momentum: 0.9,
      loss: { ce: 10 * 0.9 ** s, orth: 1e-3, sparsity: 50 - s / 10, total: 11 * 0.9 ** s },
      trainAcc: s / 60, n: 128, stepMs: 1000, reduceMs: 5 + (s % 3), imgPerSec: 128,
      workers: [
        { worker: 'w0@gpu-a', n: 64, computeMs: 100 + (s % 3) * 10, commMs: 20 },
        { worker: 'w1@gpu-b', n: 64, computeMs: 400, commMs: 30 + (s % 2) * 10 },
      ],
      time: new Date(t0 + (s + 1) * 60_000).toISOString(),
    })),
    { kind: 'epoch', epoch: 0, step: 30, trainLoss: 1, trainAcc: 0.3, testAcc: 0.4, testLoss: 1.2, epochMs: 1, effectiveRanks: {}, time: new Date(t0 + 31 * 60_000).toISOString() },
    { kind: 'epoch', epoch: 1, step: 60, trainLoss: 0.8, trainAcc: 0.5, testAcc: 0.55, testLoss: 1.1, epochMs: 1, effectiveRanks: {}, time: new Date(t0 + 61 * 60_000).toISOString() },
  ];
  const html = renderReport({ title: 'resnet20-hoyer', config: { model: 'resnet20', decomposition: 'channel', sparsity: 'hoyer', lambdaS: 0.07 }, records, spectra: spectraOf(params), macs: [{ label: 'plain resnet20', macs: 40.8e6 }, { label: 'pruned e=0.01', macs: 12e6 }] });

  it('is titled by the run name and the model', () => {
    expect(html).toContain('<title>resnet20-hoyer · resnet20 · svd-train report</title>');
    expect(html).toContain('<h1>resnet20-hoyer · resnet20</h1>');
    expect(html).toContain('epoch 2: test accuracy 55.00%');
    expect(html).toContain('60 steps · 59 min 1 s wall-clock');
    expect(html).not.toContain('NaN');
    expect(html).toContain('SVD channel · hoyer λ_s=0.07</p>');
  });

  it('names a delayed sparsity term in the config line', () => {
    const delayed = renderReport({ title: 't', config: { model: 'resnet20', decomposition: 'channel', sparsity: 'hoyer', lambdaS: 0.015, sparsityStart: 0.3 }, records, spectra: spectraOf(params), macs: [] });
    expect(delayed).toContain('hoyer λ_s=0.015 from 30% of the steps');
    const ended = renderReport({ title: 't', config: { model: 'resnet20', decomposition: 'channel', sparsity: 'hoyer', lambdaS: 0.015, sparsityStart: 0, sparsityEnd: 0.8 }, records, spectra: spectraOf(params), macs: [] });
    expect(ended).toContain('hoyer λ_s=0.015 until 80% of the steps');
    const both = renderReport({ title: 't', config: { model: 'resnet20', decomposition: 'channel', sparsity: 'hoyer', lambdaS: 0.015, sparsityStart: 0.3, sparsityEnd: 0.8 }, records, spectra: spectraOf(params), macs: [] });
    expect(both).toContain('hoyer λ_s=0.015 from 30% to 80% of the steps');
  });

  it('names the teacher of a distilled run in the config line, and no teacher when α is 0', () => {
    const cfg = { model: 'resnet20', decomposition: 'channel', distillAlpha: 0.5, distillTemperature: 4, teacher: '/runs/a/checkpoints/ckpt-0000019550.svdckpt' };
    expect(renderReport({ title: 't', config: cfg, records, spectra: spectraOf(params), macs: [] })).toContain('distilled from ckpt-0000019550.svdckpt (α 0.5, T 4)');
    const ensemble = { ...cfg, extraTeachers: [{ teacher: 'runs/b/finetuned.svdckpt', teacherRanks: null, teacherArch: null }] };
    expect(renderReport({ title: 't', config: ensemble, records, spectra: spectraOf(params), macs: [] })).toContain('distilled from ckpt-0000019550.svdckpt + finetuned.svdckpt (α 0.5, T 4)');
    expect(renderReport({ title: 't', config: { ...cfg, distillAlpha: 0 }, records, spectra: spectraOf(params), macs: [] })).not.toContain('distilled');
  });

  it('plots the distillation term in the loss chart only when the steps carry one', () => {
    const label = 'distillation T²·KL (teacher)';
    expect(html).not.toContain(label);
    const kd = records.map((r) => ('loss' in r ? { ...r, loss: { ...r.loss, distill: 0.5 } } : r));
    expect(renderReport({ title: 't', config: null, records: kd, spectra: spectraOf(params), macs: [] })).toContain(label);
  });

  it('one spectrum panel per SVD layer, in order, each with the cut of the default energy 0.01, said so', () => {
    const panels = html.match(/<svg class="spectrum" data-layer="([^"]+)"/g) ?? [];
    expect(panels.length).toBe(22);
    expect(panels.map((p) => /data-layer="([^"]+)"/.exec(p)![1])).toEqual(layers);
    const panel = (l: string) => html.split(`data-layer="${l}"`)[1]!.split('</svg>')[0]!;
    expect(panel('stem.0')).toContain('keeps 4 of 16');
    expect(panel('layers.7.conv1')).toContain('keeps 4 of 64');
    expect(panel('fc')).toContain('keeps 4 of 10');
    for (const l of layers) expect(panel(l)).toContain('class="cut"');
    expect(html).toContain('e = 0.01, a default: this run has no pipeline.json');
  });

  it('the cut follows the pipeline energy when there is one', () => {
    const pt = (energy: number, macs: number) => ({ energy, acc: 0.5, loss: 1, macs, params: 1, exportParams: 1 });
    const pipeline: PipelineSummary = { model: 'resnet20', energy: 0.05, testImages: 10, plain: { macs: 40e6, params: 1 }, trained: pt(0, 40e6), pruned: pt(0.05, 9e6), prunedCheckpoint: 'p', finetuned: null, sweep: [pt(0, 40e6), pt(0.05, 9e6)] };
    const withPipeline = renderReport({ title: 'r', config: null, records: [], spectra: spectraOf(params), macs: [], pipeline });
    expect(withPipeline.split('data-layer="stem.0"')[1]!.split('</svg>')[0]).toContain('keeps 3 of 16');
    expect(withPipeline).toContain('the energy this run pruned at (pipeline.json: e = 0.05)');
    expect(withPipeline.split('>Rank per layer<')[1]!.split('</svg>')[0]).toContain('<title>fc: rank kept at e = 0.05 3</title>');
  });

  it('rank per layer: a full-rank bar and a kept-rank bar per layer, no connecting line', () => {
    const rank = html.split('>Rank per layer<')[1]!.split('</svg>')[0]!;
    expect((rank.match(/<rect [^>]*><title>/g) ?? []).length).toBe(44);
    expect(rank).not.toContain('<path');
    expect(rank).toContain('<title>layers.6.shortcut.0: full rank 64</title>');
  });

  it('per-worker timing: medians of compute, communication and reduce per step, by worker id', () => {
    const section = html.split('<h2 id="workers">')[1]!.split('<h2>')[0]!;
    expect(section).toContain('>w0@gpu-a<');
    expect(section).toContain('>w1@gpu-b<');
    // compute 100/110/120 → median 110; comm 30/40 → median 35; reduce 5/6/7 → median 6
    expect(section).toContain('<td>w0@gpu-a</td><td>60</td><td>64</td><td>110 ms</td>');
    expect(section).toContain('<td>w1@gpu-b</td><td>60</td><td>64</td><td>400 ms</td><td>400 ms</td><td>35 ms</td>');
    expect(section).toContain('<td>6.0 ms</td>');
    // one stacked bar per worker: compute, communication, reduce
    const bars = section.split('Median time per step, by worker')[1]!.split('</svg>')[0]!;
    expect(bars).toContain('>441 ms<'); // 400 + 35 + 6 (w1's total, printed after its bar)
  });

  it('per-batch curves are smoothed over a faint raw line, against steps and against wall-clock time', () => {
    const loss = html.split('>Loss<');
    expect(loss.length).toBe(3); // one by step, one by time
    const byStep = loss[1]!.split('</svg>')[0]!;
    const byTime = loss[2]!.split('</svg>')[0]!;
    expect(byStep).toContain('stroke-opacity="0.25"');
    expect(byStep).toContain('train cross-entropy: EMA span 2 (raw faint)');
    expect(byStep).toContain('>step<');
    expect(byTime).toContain('>wall-clock minutes since the first step<');
    expect(html).toMatch(/<input type="radio" name="xaxis" id="x-step" checked>/);
    // the loss spans 10 .. 0.02 on a log axis: every decade labelled
    for (const d of ['>0.1<', '>1<', '>10<']) expect(byStep).toContain(d);
  });

  it('MACs: horizontal bars whose value labels stay below the title, in MACs (FLOPs = 2·MACs)', () => {
    const macs = html.split('MACs per image: plain ResNet, this model, pruned')[1]!.split('</svg>')[0]!;
    const ys = [...macs.matchAll(/<text [^>]*y="([\d.]+)"[^>]*>([^<]*)</g)].map((m) => [Number(m[1]), m[2]] as const);
    expect(ys.find(([, t]) => t === '12.00M (29.4%)')).toBeDefined();
    for (const [y] of ys) expect(y).toBeGreaterThan(30);
    expect(macs).toContain('million MACs per image (FLOPs = 2·MACs)');
  });
});

describe('linePlot on a long run', () => {
  it('plots 2 x 200,000 points without spreading them into Math.min/max (the stack overflowed at ~27k steps x 2 workers)', () => {
    const pts = (k: number): [number, number][] => Array.from({ length: 200_000 }, (_, i) => [i, Math.sin(i / 1000) + k]);
    const svg = linePlot([{ label: 'w0', points: pts(0) }, { label: 'w1', points: pts(1) }], { title: 't', xLabel: 'step', yLabel: 'ms' });
    expect(svg).toMatch(/^<svg/);
    expect(svg).toContain('<path');
  });
});

describe("the report's MACs table", () => {
  it("prunes by the run's MAC weight, as pipeline.json's sweep beside it does, and says so", () => {
    const model = buildResNetForConfig(parseConfig({ model: 'resnet20' }));
    try {
      const at = (w: number) => {
        const p = pruneByEnergy(model, 0.2, w);
        const macs = countMacs(p.model).total;
        p.model.dispose();
        return macs;
      };
      const [plain, full, weighted] = macsAtEnergies(model, parseConfig({ model: 'resnet20', pruneEnergy: 0.2, pruneMacWeight: 1 }), [0.2]);
      expect([plain!.label, full!.label, weighted!.label]).toEqual(['plain resnet20', 'full rank', 'pruned e=0.2, MAC weight 1']);
      expect(weighted!.macs).toBe(at(1));
      expect(at(1)).not.toBe(at(0));
      expect(macsAtEnergies(model, parseConfig({ model: 'resnet20' }), [0.2])[2]).toMatchObject({ label: 'pruned e=0.2', macs: at(0) });
    } finally {
      model.dispose();
    }
  });
});
