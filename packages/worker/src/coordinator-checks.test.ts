/**
 * The worker's checks of coordinator messages name wire strings escaped (escapeForLog, 80
 * characters): a tensor or file name with a newline or a terminal escape cannot forge log lines.
 */
import { describe, expect, it } from 'vitest';
import { SvdTrainError } from '@svd-train/core';
import { checkDatasetInfo, checkWeights } from './coordinator-checks.js';

const FORGED = 'w\n[worker] all good\u001b[2J\u2028';

function err(f: () => void): SvdTrainError {
  try {
    f();
  } catch (e) {
    return e as SvdTrainError;
  }
  throw new Error('expected a throw');
}

describe('coordinator checks: wire strings in messages', () => {
  it('checkWeights: a parameter of another name is SHAPE_MISMATCH naming it escaped', () => {
    const manifest = { params: [{ name: 'conv/kernel', shape: [2] }], buffers: [] };
    const e = err(() => checkWeights({ params: [{ name: FORGED + 'x'.repeat(200), shape: [2], data: new Float32Array(2) }], buffers: [] }, manifest));
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.message).toContain("parameters[0] 'w\\x0a[worker] all good\\x1b[2J\\u2028x");
    expect(e.message).toContain('… (224 chars)');
    expect(e.message).not.toMatch(/[\n\u001b\u2028]/);
  });

  it('checkDatasetInfo: an unknown file name and a malformed md5 are PROTOCOL_INVALID naming them escaped', () => {
    const name = err(() => checkDatasetInfo({ trainCount: 1, testCount: 1, md5s: { [FORGED]: 'a'.repeat(32) } }));
    expect(name.code).toBe('PROTOCOL_INVALID');
    expect(name.message).toContain("dataset file name 'w\\x0a[worker] all good\\x1b[2J\\u2028'");
    const md5 = err(() => checkDatasetInfo({ trainCount: 1, testCount: 1, md5s: { 'data_batch_1.bin': FORGED } }));
    expect(md5.message).toContain("md5 'w\\x0a[worker] all good\\x1b[2J\\u2028' for data_batch_1.bin");
    for (const e of [name, md5]) expect(e.message).not.toMatch(/[\n\u001b\u2028]/);
  });
});
