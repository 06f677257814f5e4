/**
 * When the coordinator demands authentication (the proofs themselves are core's `authProof`, the
 * one helper both ends use). A token is required unless the server is bound to loopback or
 * `--insecure`.
 */
import { SvdTrainError } from '@svd-train/core';

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
