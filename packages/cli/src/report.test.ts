import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isSvdTrainError } from '@svd-train/core';
import { readMetrics, renderPipeline, renderReport, spectraOf, writeReport, type PipelineSummary } from './report.js';
import { niceTicks, tickLabels } from './svg-plot.js';

describe('niceTicks', () => {
  it('[0, 1] -> 1-2-5 steps of 0.2', () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
  });
  it('labels keep enough digits to stay distinct', () => {
    expect(tickLabels([119.905, 119.91, 119.915])).toEqual(['119.905', '119.91', '119.915']);
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
  });

  it('writeReport writes runs/NAME/report.html and survives a run with no metrics', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rep-'));
    const out = writeReport(dir);
    expect(out).toBe(join(dir, 'report.html'));
    expect(readFileSync(out, 'utf8')).toContain('no data');
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
    // The fine-tuned model and the pruned one are single points, drawn as markers.
    expect((curve.match(/<circle /g) ?? []).length).toBe(2);
    expect(curve).toContain('r="6"');
    expect(renderReport({ title: 't', config: null, records: [], spectra: [], macs: [], pipeline: p })).toContain('Train → prune → fine-tune');
  });
});
