import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NONCE_BYTES, authProof, makeNonce, verifyAuthProof } from './auth.js';

describe('mutual token proofs', () => {
  const nonces = { worker: makeNonce(), coordinator: makeNonce() };
  it('is HMAC-SHA256 over the role label and both nonces (golden: RFC 4231 key "Jefe")', () => {
    const w = new Uint8Array(NONCE_BYTES).fill(1);
    const c = new Uint8Array(NONCE_BYTES).fill(2);
    const want = createHmac('sha256', 'Jefe').update(Buffer.concat([Buffer.from('svd-train worker proof\0'), w, c])).digest('hex');
    expect(authProof('Jefe', 'worker', { worker: w, coordinator: c })).toBe(want);
  });
  it('verifies only with the same token, role and both nonces', () => {
    const p = authProof('tok', 'worker', nonces);
    expect(verifyAuthProof('tok', 'worker', nonces, p)).toBe(true);
    expect(verifyAuthProof('tok2', 'worker', nonces, p)).toBe(false);
    expect(verifyAuthProof('tok', 'worker', { ...nonces, coordinator: makeNonce() }, p)).toBe(false);
    expect(verifyAuthProof('tok', 'worker', { ...nonces, worker: makeNonce() }, p)).toBe(false);
    expect(verifyAuthProof('tok', 'worker', nonces, p.toUpperCase())).toBe(true);
    expect(verifyAuthProof('tok', 'worker', nonces, 'zz')).toBe(false);
    expect(verifyAuthProof('tok', 'worker', nonces, '')).toBe(false);
  });
  it("one side's proof is never the other side's (no reflection)", () => {
    const p = authProof('tok', 'coordinator', nonces);
    expect(verifyAuthProof('tok', 'worker', nonces, p)).toBe(false);
    expect(verifyAuthProof('tok', 'coordinator', nonces, p)).toBe(true);
  });
});
