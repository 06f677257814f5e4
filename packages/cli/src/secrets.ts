/**
 * Secrets and certificates from files, for both CLIs: a token given as `--token T` is visible to
 * every user in `ps`, so `--token-file F` and SVD_TRAIN_TOKEN are the documented ways, and TLS
 * material is read once here with errors that name the flag and the file.
 */
import { readFileSync, statSync } from 'node:fs';
import { usageError } from './cli-errors.js';

function readFlagFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw usageError(`${flag} ${JSON.stringify(path)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Fix: pass a readable file.`);
  }
}

/** The token in `path`: its first line, without surrounding whitespace. */
export function readTokenFile(path: string, warn?: (s: string) => void): string {
  const token = readFlagFile('--token-file', path).toString('utf8').split(/\r?\n/)[0].trim();
  if (!token) throw usageError(`--token-file ${JSON.stringify(path)} is empty; expected the shared token on its first line. Fix: e.g. \`openssl rand -hex 32 > ${path}\`.`);
  try {
    // Other users reading the token file could join the run; say so rather than refuse.
    if (warn && (statSync(path).mode & 0o077) !== 0) warn(`warning: --token-file ${path} is readable by other users; chmod 600 it\n`);
  } catch {
    /* stat raced with a delete: the read above succeeded, that is enough */
  }
  return token;
}

/**
 * The token from `--token-file`, `--token` or SVD_TRAIN_TOKEN (in that order); warns when it
 * came from `--token`, which `ps` shows. Refuses both flags at once.
 */
export function resolveToken(o: { token?: string; tokenFile?: string }, warn: (s: string) => void, env: NodeJS.ProcessEnv = process.env): string | null {
  if (o.token !== undefined && o.tokenFile !== undefined) throw usageError('--token and --token-file were both given; expected one. Fix: keep --token-file (the token stays out of `ps`).');
  if (o.tokenFile !== undefined) return readTokenFile(o.tokenFile, warn);
  if (o.token !== undefined) {
    warn('warning: --token is visible to every user of this machine in `ps`; prefer --token-file FILE or SVD_TRAIN_TOKEN\n');
    return o.token;
  }
  return env.SVD_TRAIN_TOKEN || null;
}

/** PEM certificate chain and key for `svd-coord start --tls-cert F --tls-key F`; both or neither. */
export function readTlsFiles(o: { tlsCert?: string; tlsKey?: string }): { cert: Buffer; key: Buffer } | null {
  if (o.tlsCert === undefined && o.tlsKey === undefined) return null;
  if (o.tlsCert === undefined || o.tlsKey === undefined) {
    throw usageError(`${o.tlsCert === undefined ? '--tls-key' : '--tls-cert'} was given without ${o.tlsCert === undefined ? '--tls-cert' : '--tls-key'}; expected both. Fix: pass the PEM certificate (chain) and its private key.`);
  }
  const cert = readFlagFile('--tls-cert', o.tlsCert);
  const key = readFlagFile('--tls-key', o.tlsKey);
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw usageError(`--tls-cert ${JSON.stringify(o.tlsCert)} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----"). Fix: pass the certificate in PEM form.`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString('latin1'))) throw usageError(`--tls-key ${JSON.stringify(o.tlsKey)} holds no PEM private key. Fix: pass the unencrypted PEM key of --tls-cert.`);
  return { cert, key };
}
