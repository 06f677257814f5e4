import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SvdTrainError } from '@svd-train/core';
import { readTlsFiles, resolveToken } from './secrets.js';

const dir = mkdtempSync(join(tmpdir(), 'cli-secrets-'));
const file = (name: string, text: string, mode = 0o600) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
};
const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return `${(e as SvdTrainError).code}: ${(e as Error).message}`;
  }
  return 'no error';
};

describe('token and TLS files', () => {
  it('--token-file reads the first line, trimmed; it wins over SVD_TRAIN_TOKEN', () => {
    const warnings: string[] = [];
    expect(resolveToken({ tokenFile: file('t', '  s3cret \nignored\n') }, (w) => warnings.push(w), { SVD_TRAIN_TOKEN: 'env' })).toBe('s3cret');
    expect(warnings).toEqual([]);
    expect(resolveToken({}, () => {}, { SVD_TRAIN_TOKEN: 'env' })).toBe('env');
    expect(resolveToken({}, () => {}, {})).toBeNull();
  });
  it('--token works but warns that ps shows it; a world-readable token file warns too', () => {
    const warnings: string[] = [];
    expect(resolveToken({ token: 'visible' }, (w) => warnings.push(w), {})).toBe('visible');
    resolveToken({ tokenFile: file('open', 'x\n', 0o644) }, (w) => warnings.push(w), {});
    expect(warnings.join('')).toMatch(/visible to every user.*`ps`[\s\S]*readable by other users; chmod 600/);
  });
  it('refuses an empty or missing token file, and both flags at once, naming the flag and the fix', () => {
    expect(codeOf(() => resolveToken({ tokenFile: file('empty', '\n') }, () => {}, {}))).toMatch(/^CLI_USAGE: --token-file .*empty.*openssl rand/);
    expect(codeOf(() => resolveToken({ tokenFile: join(dir, 'nope') }, () => {}, {}))).toMatch(/^CLI_USAGE: --token-file .*nope.*ENOENT/);
    expect(codeOf(() => resolveToken({ token: 'a', tokenFile: 'b' }, () => {}, {}))).toMatch(/^CLI_USAGE: --token and --token-file were both given/);
  });
  it('--tls-cert and --tls-key come together and must hold PEM', () => {
    expect(readTlsFiles({})).toBeNull();
    expect(codeOf(() => readTlsFiles({ tlsCert: 'c.pem' }))).toMatch(/^CLI_USAGE: --tls-cert was given without --tls-key/);
    const cert = file('c.pem', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const key = file('k.pem', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    expect(readTlsFiles({ tlsCert: cert, tlsKey: key })?.cert.toString()).toContain('BEGIN CERTIFICATE');
    expect(codeOf(() => readTlsFiles({ tlsCert: key, tlsKey: key }))).toMatch(/^CLI_USAGE: --tls-cert .* holds no PEM certificate/);
    expect(codeOf(() => readTlsFiles({ tlsCert: cert, tlsKey: cert }))).toMatch(/^CLI_USAGE: --tls-key .* holds no PEM private key/);
  });
});
