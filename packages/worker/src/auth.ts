/**
 * Challenge-response on the shared token. The token never travels: the worker proves it knows it
 * by returning HMAC-SHA256(token, nonce) for a nonce that the coordinator picked for this
 * connection, so a recorded answer is useless on another connection.
 */
import { createHmac } from 'node:crypto';

/** Hex HMAC-SHA256 of `nonce` keyed with `token` (worker side of the handshake). */
export function answerChallenge(token: string, nonce: string | Uint8Array): string {
  return createHmac('sha256', token).update(nonce).digest('hex');
}
