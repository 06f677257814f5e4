/**
 * wss:// with mutual token authentication, the documented way across machines: a self-signed
 * certificate made here with openssl, `svd-coord start --tls-cert --tls-key --token-file`, and
 * `svd-worker --coordinator wss://… --ca cert.pem --token-file`. The run trains to the same
 * parameters as the same run over plain ws://; a worker without --ca refuses the certificate
 * (AUTH_FAILED, no retry loop), and the token is in neither process's argv.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { WORKER_BIN, configFile, finalCheckpoint, freePort, launch, maxDiff, requireBuild, startCoordinator, startWorker, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

const hasOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
const TOKEN = 'tls-suite-token';

describe.skipIf(!hasOpenssl)('wss:// with a self-signed certificate and a token file', () => {
  let dir: string;
  let cert: string;
  let key: string;
  let tokenFile: string;
  let data: string;
  let cfgFile: string;

  beforeAll(() => {
    requireBuild();
    dir = tempDir('svd-tls-');
    cert = join(dir, 'cert.pem');
    key = join(dir, 'key.pem');
    // The certificate names 127.0.0.1 and localhost, which is what workers connect by.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=svd-train-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    data = syntheticData(40, 12);
    cfgFile = configFile({ handshakeTimeoutMs: 8000 });
  });

  it('trains over wss:// to the same parameters as over ws://; a worker without --ca refuses the certificate', async () => {
    const plainOut = tempDir();
    const plainPort = await freePort();
    const plain = startCoordinator([...tinyRunFlags({ data, out: plainOut, port: plainPort, epochs: 1, limitTrain: 24, batch: 12 }), '--config', cfgFile, '--token-file', tokenFile]);
    await waitForPort(plainPort, 60_000, plain);
    const pw = startWorker(plainPort, ['--data', data, '--token-file', tokenFile]);
    expect(await plain.exited, plain.output()).toBe(0);
    await pw.exited;

    const out = tempDir();
    const port = await freePort();
    const coord = startCoordinator([...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 24, batch: 12 }), '--config', cfgFile, '--token-file', tokenFile, '--tls-cert', cert, '--tls-key', key]);
    await waitForPort(port, 60_000, coord);
    await coord.waitFor(/listening on wss:\/\/127\.0\.0\.1:\d+ \(auth required, TLS\)/, 30_000);

    // Without --ca the self-signed certificate is not trusted: a coded refusal, not a retry loop.
    const untrusting = launch(WORKER_BIN, ['--coordinator', `wss://127.0.0.1:${port}`, '--backend', 'wasm', '--token-file', tokenFile]);
    expect(await untrusting.exited).not.toBe(0);
    expect(untrusting.output()).toMatch(/error \[AUTH_FAILED\].*TLS certificate this worker does not trust.*--ca/);

    const w = launch(WORKER_BIN, ['--coordinator', `wss://127.0.0.1:${port}`, '--ca', cert, '--backend', 'wasm', '--data', data, '--token-file', tokenFile]);
    // The token is in no process's command line.
    for (const pid of [coord.child.pid, w.child.pid]) {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      expect(cmdline).not.toContain(TOKEN);
    }
    expect(await coord.exited, coord.output()).toBe(0);
    expect(await w.exited, w.output()).toBe(0);
    const d = maxDiff(finalCheckpoint(plainOut).params, finalCheckpoint(out).params);
    expect(d.diff, `largest difference at ${d.where}`).toBe(0);
  });
});
