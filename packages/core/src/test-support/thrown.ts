import { expect } from 'vitest';
import { SvdTrainError } from '../errors.js';

/** Runs `fn`, expects it to throw an SvdTrainError and returns it (to check code and message). */
export function thrown(fn: () => unknown): SvdTrainError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SvdTrainError);
    return e as SvdTrainError;
  }
  throw new Error('expected a throw');
}
