/**
 * Mutual challenge-response on the shared token, the ONE definition both ends use.
 *
 * Each side picks a fresh random nonce (the worker in `hello`, the coordinator in `challenge`) and
 * proves it knows the token with hex(HMAC-SHA256(token, label(role) || workerNonce || coordinatorNonce)).
 * The token never travels. Binding both nonces makes every proof good for one connection only, and
 * the role label keeps a proof made by one side from being replayed as the other side's (a rogue
 * worker could otherwise open a second connection with hello.nonce = the challenge it must answer
 * and have the coordinator sign it). TLS (wss://) is what stops a relay between two live sessions.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Bytes of each nonce; the protocol decoder refuses other lengths. */
export const NONCE_BYTES = 32;

/** Who proves: the worker answers the coordinator's challenge, the coordinator the worker's hello. */
export type AuthRole = 'worker' | 'coordinator';

/** Both nonces of one connection. */
export interface AuthNonces {
  worker: Uint8Array;
  coordinator: Uint8Array;
}

/** A fresh random nonce (both sides call it once per connection). */
export function makeNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

/** hex(HMAC-SHA256(token, 'svd-train <role> proof\0' || nonces.worker || nonces.coordinator)). */
export function authProof(token: string, role: AuthRole, nonces: AuthNonces): string {
  return createHmac('sha256', token).update(`svd-train ${role} proof\0`).update(nonces.worker).update(nonces.coordinator).digest('hex');
}

/** Constant-time check of the peer's proof; false for anything that is not the exact hex HMAC. */
export function verifyAuthProof(token: string, role: AuthRole, nonces: AuthNonces, proof: string): boolean {
  if (typeof proof !== 'string' || !/^[0-9a-f]{64}$/i.test(proof)) return false;
  const want = Buffer.from(authProof(token, role, nonces), 'hex');
  const got = Buffer.from(proof, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}
