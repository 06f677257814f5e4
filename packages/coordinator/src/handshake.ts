/**
 * Challenge-response authentication of workers (coordinator side).
 *
 * The coordinator sends a fresh random nonce; the worker answers hex(HMAC-SHA256(token, nonce)).
 * The token never travels, and a captured answer is useless for the next connection because the
 * nonce changes. A token is required unless the server is bound to loopback or `--insecure`.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { SvdTrainError } from '@svd-train/core';

/** Bytes of nonce per challenge. */
export const NONCE_BYTES = 32;

export function makeNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

/** hex(HMAC-SHA256(key = token, message = nonce)); what a worker must answer (either side may call it). */
export function authMac(token: string, nonce: Uint8Array): string {
  return createHmac('sha256', token).update(nonce).digest('hex');
}

/** Constant-time check of a worker's answer. */
export function verifyMac(token: string, nonce: Uint8Array, mac: string): boolean {
  const want = Buffer.from(authMac(token, nonce), 'hex');
  if (!/^[0-9a-f]*$/i.test(mac)) return false;
  const got = Buffer.from(mac, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

/** True for hosts that only local processes can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Decides whether workers must authenticate.
 * @throws SvdTrainError AUTH_FAILED when the server would be reachable from the network without a token.
 */
export function authPolicy(host: string, token: string | null, insecure: boolean): { required: boolean } {
  if (token) return { required: true };
  if (isLoopbackHost(host) || insecure) return { required: false };
  throw new SvdTrainError(
    'AUTH_FAILED',
    `coordinator bound to ${host} without a token: anyone who can reach it could join the run. Fix: pass --token (or SVD_TRAIN_TOKEN), bind to 127.0.0.1, or pass --insecure on a trusted network`,
  );
}
