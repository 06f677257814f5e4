import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isSvdTrainError } from '@svd-train/core';
import { readMetrics, renderPipeline, renderReport, spectraOf, writeReport, type PipelineSummary } from './report.js';
import { ema, emaSpan, linePlot, logTicks, niceTicks, tickLabels } from './svg-plot.js';

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
  });

  it('the pipeline section: before / after pruning / after fine-tuning, the accuracy-vs-MACs curve with the fine-tuned point marked', () => {
    const pt = (energy: number, acc: number, macs: number) => ({ energy, acc, loss: 1, macs, params: 1, exportParams: 2 });
    const p: PipelineSummary = {
      model: 'resnet20', energy: 0.05, testImages: 100, plain: { macs: 40e6, params: 274042 },
      trained: pt(0, 0.9, 40e6), pruned: pt(0.05, 0.6, 10e6), prunedCheckpoint: 'x', sweep: [pt(0, 0.9, 40e6), pt(0.01, 0.85, 20e6), pt(0.05, 0.6, 10e6)],
      finetuned: { ...pt(0.05, 0.88, 10e6), epochs: 2, lr: 0.01, run: 'finetune' },
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
});
