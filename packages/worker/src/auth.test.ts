import { describe, expect, it } from 'vitest';
import { answerChallenge } from './auth.js';

describe('answerChallenge', () => {
  it('is HMAC-SHA256 (RFC 4231 test case 2: key "Jefe")', () => {
    expect(answerChallenge('Jefe', new TextEncoder().encode('what do ya want for nothing?'))).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });
  it('depends on the nonce, so a recorded answer does not replay', () => {
    expect(answerChallenge('t', new Uint8Array([1]))).not.toBe(answerChallenge('t', new Uint8Array([2])));
  });
});
