import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { CIFAR10_URL, SvdTrainError, parseConfig } from '@svd-train/core';
import { buildCoordProgram } from './coord-cli.js';
import { configFromOptions, distillationPlan } from './commands/start.js';
import { EXIT_USAGE, reportError } from './cli-errors.js';
import { checkpointOf } from './test-support/checkpoints.js';

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  let code = 0;
  const io = { out: (s: string) => void (out += s), err: (s: string) => void (err += s) };
  try {
    await buildCoordProgram(io, (c) => (code = c)).parseAsync(['node', 'svd-coord', ...args]);
  } catch (e) {
    code = reportError(e, io.err);
  }
  return { code, out, err };
}

describe('svd-coord options', () => {
  it('flags override the config file, which overrides defaults; --no-augment turns augmentation off', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ lr: 0.05, epochs: 7 }));
    const cfg = configFromOptions({ config: join(dir, 'c.json'), lr: '0.2', lambdaO: '0.5', augment: false }, {});
    expect(cfg.lr).toBe(0.2);
    expect(cfg.epochs).toBe(7);
    expect(cfg.lambdaO).toBe(0.5);
    expect(cfg.augment).toBe(false);
    expect(cfg.batch).toBe(128);
  });

  it('--cutout 16 sets the Cutout side; with --no-augment it is refused, naming both', () => {
    expect(configFromOptions({ cutout: '16' }, {}).cutout).toBe(16);
    expect(() => configFromOptions({ cutout: '16', augment: false }, {})).toThrow(/cutout = 16 \(from flag --cutout\).*drop --no-augment, or --cutout/s);
  });

  it('optimizer flags: --no-nesterov, --no-cycle-momentum, --decay-on, --momentum; absent negations keep the file value', () => {
    const cfg = configFromOptions({ nesterov: false, cycleMomentum: false, decayOn: 'factors', momentum: '0.8', weightDecay: '1e-4' }, {});
    expect(cfg).toMatchObject({ nesterov: false, cycleMomentum: false, decayOn: 'factors', momentum: 0.8, weightDecay: 1e-4 });
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ nesterov: false, cycleMomentum: false }));
    // commander reports an absent --no-X as true; that must not override the file.
    const fromFile = configFromOptions({ config: join(dir, 'c.json'), nesterov: true, cycleMomentum: true }, {});
    expect(fromFile).toMatchObject({ nesterov: false, cycleMomentum: false, decayOn: 'all' });
    expect(() => configFromOptions({ decayOn: 'some' }, {})).toThrow(/decay/i);
  });

  it('--step-timeout-ms below 30 s works without a config-file key; --stall-warn-ms is a flag', async () => {
    expect(configFromOptions({ stepTimeoutMs: '10000' }, {})).toMatchObject({ stepTimeoutMs: 10000, stallWarnMs: 2500 });
    expect(configFromOptions({ stepTimeoutMs: '10000', stallWarnMs: '4000' }, {})).toMatchObject({ stepTimeoutMs: 10000, stallWarnMs: 4000 });
    const help = await run(['start', '--help']);
    expect(help.out).toContain('--stall-warn-ms');
  });

  it('--keep-checkpoints is a flag (default 3); below 1 is refused', async () => {
    expect(configFromOptions({ keepCheckpoints: '50' }, {}).keepCheckpoints).toBe(50);
    expect(configFromOptions({}, {}).keepCheckpoints).toBe(3);
    expect(() => configFromOptions({ keepCheckpoints: '0' }, {})).toThrow(/keepCheckpoints/);
    expect((await run(['start', '--help'])).out).toContain('--keep-checkpoints <n>');
  });

  it('distillation goes to the pipeline\'s fine-tuning alone, unless --distill-training sends --teacher to the training too', async () => {
    const pipe = { pruneMacs: '13.6e6', finetuneEpochs: '3', distillAlpha: '0.7', teacher: 't.svdckpt' };
    const later = distillationPlan(configFromOptions(pipe, {}));
    expect([later.train.distillAlpha, later.train.teacher, later.train.distillTraining]).toEqual([0, null, false]);
    expect(later.finetune).toMatchObject({ alpha: 0.7, teacher: 't.svdckpt' });
    const both = distillationPlan(configFromOptions({ ...pipe, distillTraining: true }, {}));
    expect([both.train.distillAlpha, both.train.teacher]).toEqual([0.7, 't.svdckpt']);
    expect(both.finetune).toMatchObject({ alpha: 0.7, teacher: 't.svdckpt' });
    // Outside the pipeline's fine-tuning the training is distilled either way.
    const alone = distillationPlan(configFromOptions({ distillAlpha: '0.7', teacher: 't.svdckpt' }, {}));
    expect([alone.train.distillAlpha, alone.finetune]).toEqual([0.7, null]);
    // The trained model cannot teach its own training: --distill-training needs --teacher and α > 0.
    expect(() => configFromOptions({ pruneMacs: '13.6e6', finetuneEpochs: '3', distillAlpha: '0.7', distillTraining: true }, {})).toThrow(/distillTraining = true.*--teacher CKPT/s);
    expect(() => configFromOptions({ ...pipe, distillAlpha: '0', distillTraining: true }, {})).toThrow(/distillAlpha is 0/);
    expect((await run(['start', '--help'])).out).toContain('--distill-training');
  });

  it('--teacher repeated is an ensemble: the first is teacher, the others extraTeachers, and the pipeline\'s fine-tuning gets them all', async () => {
    const cfg = configFromOptions({ pruneMacs: '13.6e6', finetuneEpochs: '3', distillAlpha: '0.7', teacher: ['a.svdckpt', 'b.svdckpt', 'c.svdckpt'] }, {});
    expect(cfg.teacher).toBe('a.svdckpt');
    expect(cfg.extraTeachers.map((t) => t.teacher)).toEqual(['b.svdckpt', 'c.svdckpt']);
    const plan = distillationPlan(cfg);
    expect(plan.finetune?.extraTeachers.map((t) => t.teacher)).toEqual(['b.svdckpt', 'c.svdckpt']);
    expect(plan.train.extraTeachers).toEqual([]);
    expect(configFromOptions({ distillAlpha: '0.7', teacher: ['a.svdckpt'] }, {}).extraTeachers).toEqual([]);
    // Whitespace collapsed: where commander wraps the line depends on the longest option's width.
    const help = (await run(['start', '--help'])).out.replace(/\s+/g, ' ');
    expect(help).toContain('Repeat it for an ensemble');
  });

  it('SVD_TRAIN_TOKEN supplies the token', () => {
    expect(configFromOptions({}, { SVD_TRAIN_TOKEN: 's3cret' }).token).toBe('s3cret');
  });

  it('a bad value exits 2 with the field, the value and what was expected, no stack trace', async () => {
    const r = await run(['start', '--lr', 'fast', '--out', join(tmpdir(), 'never')]);
    expect(r.code).toBe(EXIT_USAGE);
    expect(r.err).toContain('lr');
    expect(r.err).toContain('"fast"');
    expect(r.err).not.toMatch(/\n\s+at /);
  });

  it('an option for a phase the run does not have exits 2 before anything runs, naming it and the option that turns the phase on', async () => {
    const cases: [string[], RegExp][] = [
      [['--finetune-lr', '0.01'], /--finetune-lr 0\.01: it shapes a phase this run does not have.*Fix: add --finetune-epochs N/],
      [['--prune-energy', '0.1', '--finetune-weight-decay', '0'], /--finetune-weight-decay 0: .*--finetune-epochs N/],
      [['--finetune-lambda-o', '0.5'], /--finetune-lambda-o 0\.5: /],
      [['--prune-mac-weight', '1'], /--prune-mac-weight 1: .*Fix: add --prune-energy e or --prune-macs N, or drop --prune-mac-weight/],
      [['--plain-lr', '0.2'], /--plain-lr 0\.2: .*--plain-epochs N/],
    ];
    for (const [flags, re] of cases) {
      const out = join(tmpdir(), `never-${flags[0]}`);
      const r = await run(['start', ...flags, '--data', '/nonexistent-data', '--out', out]);
      expect(r.code, flags.join(' ')).toBe(EXIT_USAGE);
      expect(r.err).toMatch(re);
      expect(r.err).not.toContain('nonexistent-data');
    }
  });

  it('an unknown option exits 2', async () => {
    const r = await run(['start', '--learning-rate', '1']);
    expect(r.code).toBe(EXIT_USAGE);
    expect(r.err).toContain('--learning-rate');
  });

  it('prune --energy outside [0,1) is refused before touching the checkpoint', async () => {
    const r = await run(['prune', '/nonexistent.ckpt', '--energy', '2']);
    expect(r.code).toBe(EXIT_USAGE);
    expect(r.err).toContain('--energy "2"');
  });

  it('prune refuses a plain checkpoint (no singular values) with exit 2 and names decompose as the fix, writing nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-prune-plain-'));
    try {
      const path = checkpointOf(dir, parseConfig({ model: 'resnet20', svd: false }), 'plain');
      const r = await run(['prune', path, '--energy', '0.1', '--out', join(dir, 'pruned.svdckpt')]);
      expect(r.code).toBe(EXIT_USAGE);
      expect(r.err).toContain('is a plain model (no SVD layers), so there are no singular values to prune');
      expect(r.err).toContain(`svd-coord decompose ${path}`);
      expect(existsSync(join(dir, 'pruned.svdckpt'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('download without --dir fetches into the data folder (SVD_TRAIN_DATA or the cache) instead of refusing because the data is missing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-download-'));
    const urls: string[] = [];
    vi.stubEnv('SVD_TRAIN_DATA', join(dir, 'cifar'));
    vi.stubGlobal('fetch', (url: string) => {
      urls.push(String(url));
      return Promise.resolve(new Response('not here', { status: 404, statusText: 'Not Found' }));
    });
    try {
      const r = await run(['download']);
      expect(urls).toEqual([CIFAR10_URL]);
      expect(r.err).not.toContain('DATA_MISSING');
      expect(r.err).toContain('404');
    } finally {
      vi.unstubAllGlobals();
      vi.unstubAllEnvs();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prune --mac-weight below 0 or not a number is refused before touching the checkpoint', async () => {
    for (const bad of ['-1', 'half']) {
      const r = await run(['prune', '/nonexistent.ckpt', '--energy', '0.01', '--mac-weight', bad]);
      expect(r.code).toBe(EXIT_USAGE);
      expect(r.err).toContain(`--mac-weight ${JSON.stringify(bad)} is not valid; expected a number ≥ 0`);
    }
  });

  it('--help lists the start options', async () => {
    const r = await run(['start', '--help']);
    expect(r.code).toBe(0);
    for (const f of ['--spawn', '--lambda-o', '--resume', '--token', '--eval-every', '--min-workers']) expect(r.out).toContain(f);
  });

  it('reportError gives unexpected errors exit 1 and keeps their stack', () => {
    let s = '';
    expect(reportError(new Error('boom'), (x) => (s += x))).toBe(1);
    expect(s).toContain('boom');
    expect(reportError(new SvdTrainError('CONFIG_INVALID', 'bad'), () => {})).toBe(EXIT_USAGE);
    // A stop on Ctrl-C is no error: the shell's 130, and the checkpoint it wrote named.
    let stop = '';
    expect(reportError(new SvdTrainError('INTERRUPTED', 'received SIGINT: stopped at step 4 of 9; checkpoint written at step 4'), (x) => (stop += x))).toBe(130);
    expect(stop).toBe('stopped: received SIGINT: stopped at step 4 of 9; checkpoint written at step 4\n');
  });

  it('failures that are not the user\'s input exit 1, not the usage code 2', () => {
    for (const code of ['WORKERS_FAILED', 'CONNECTION_FAILED', 'PEER_TIMEOUT', 'INTERNAL'] as const) {
      expect(reportError(new SvdTrainError(code, 'x'), () => {}), code).toBe(1);
    }
    expect(reportError(new SvdTrainError('CHECKPOINT_UNREADABLE', 'x'), () => {})).toBe(EXIT_USAGE);
  });
});
