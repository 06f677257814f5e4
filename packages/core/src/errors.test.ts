import { describe, it, expect } from 'vitest';
import { assert, isErrorCode, isSvdTrainError, SvdTrainError, ERROR_CODES } from './errors.js';

describe('SvdTrainError', () => {
  it('carries code, details and a stable name', () => {
    const e = new SvdTrainError('SHAPE_MISMATCH', 'actual [2,3], expected [3,2]', { actual: [2, 3] });
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.name).toBe('SvdTrainError');
    expect(e.details).toEqual({ actual: [2, 3] });
    expect(isSvdTrainError(e)).toBe(true);
    expect(isSvdTrainError(e, 'SHAPE_MISMATCH')).toBe(true);
    expect(isSvdTrainError(e, 'DATA_CORRUPT')).toBe(false);
    expect(isSvdTrainError(new Error('x'))).toBe(false);
  });

  it('lists the contract codes', () => {
    for (const c of ['CONFIG_INVALID', 'CONFIG_UNKNOWN_KEY', 'DATA_MISSING', 'DATA_CORRUPT', 'NON_FINITE', 'AUTH_FAILED', 'ROUND_MISMATCH', 'BACKEND_UNAVAILABLE']) {
      expect(ERROR_CODES).toContain(c);
    }
  });

  it('isErrorCode accepts exactly the listed codes (a code from the wire is checked, not cast)', () => {
    for (const c of ERROR_CODES) expect(isErrorCode(c)).toBe(true);
    for (const v of ['', 'SOMETHING_NEW', 'auth_failed', 'toString', 42, null, undefined, ['AUTH_FAILED']]) expect(isErrorCode(v)).toBe(false);
  });
});

describe('assert', () => {
  it('does not build the message when the condition holds', () => {
    let built = 0;
    assert(true, () => { built++; return 'x'; }, 'NON_FINITE');
    expect(built).toBe(0);
  });

  it('throws with the given code and the lazily built message', () => {
    expect(() => assert(1 > 2, () => 'loss is NaN', 'NON_FINITE')).toThrow(
      expect.objectContaining({ code: 'NON_FINITE', message: 'loss is NaN' }),
    );
  });
});
