/**
 * `svd-coord`: start a distributed training run, and work on its checkpoints (eval, prune, export,
 * report, download). Every training option goes through core's `resolveConfig(flags, file, env)`,
 * so flags, a --config JSON file and SVD_TRAIN_* variables mean the same thing everywhere.
 */
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import {
  ProgressBar,
  SvdTrainError,
  configHash,
  readCifar10,
  assembleBatch,
  resolveConfig,
  resolveDataDir,
  serializeConfig,
  type RunConfig,
} from '@svd-train/core';
import { reportError, usageError } from './cli-errors.js';
import { peers, type CheckpointLike } from './peers.js';
import { writeReport, type FlopsRow } from './report.js';
import { spawnWorkers } from './spawn-workers.js';

type Out = { out: (s: string) => void; err: (s: string) => void };
const defaultIo: Out = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** [flag, config key, description]; values stay strings and resolveConfig converts them. */
const START_OPTIONS: [string, string][] = [
  ['--model <name>', 'resnet20 | resnet32 | resnet44 | resnet56 | resnet110 | resnet18 (default resnet20)'],
  ['--decomposition <kind>', 'channel | spatial (default channel)'],
  ['--sparsity <kind>', 'singular-value sparsity: hoyer | l1 | hoyer2 | none (default hoyer)'],
  ['--lambda-o <x>', 'orthogonality weight λ_o (default 1)'],
  ['--lambda-s <x>', 'sparsity weight λ_s (default 0.07)'],
  ['--optimizer <name>', 'sgd | adam (default sgd)'],
  ['--lr <x>', 'peak learning rate (default 0.1)'],
  ['--schedule <name>', 'onecycle | multistep | cosine | constant (default onecycle)'],
  ['--epochs <n>', 'epochs to train (default 3)'],
  ['--batch <n>', 'global batch size, split across workers (default 128)'],
  ['--seed <n>', 'seed for init, data order and augmentation (default 0)'],
  ['--data <dir>', 'CIFAR-10 binary folder (or SVD_TRAIN_DATA; default: the cache folder)'],
  ['--limit-train <n>', 'use only the first n training images'],
  ['--limit-test <n>', 'use only the first n test images'],
  ['--host <addr>', 'address to listen on (default 127.0.0.1; a token is required off loopback)'],
  ['--port <n>', 'port to listen on (default 7733)'],
  ['--min-workers <n>', 'wait for this many workers before each step (default 1)'],
  ['--spawn <k>', 'start k local worker processes (default 0)'],
  ['--out <dir>', 'run folder for config, metrics, checkpoints, report (default runs/latest)'],
  ['--from <ckpt>', 'start from this checkpoint\'s weights (fine-tuning, e.g. after prune)'],
  ['--token <secret>', 'shared worker token (or SVD_TRAIN_TOKEN)'],
  ['--eval-every <n>', 'evaluate on the test set every n epochs (0 = never; default 1)'],
  ['--checkpoint-every <n>', 'also checkpoint every n steps (default 200)'],
  ['--max-worker-batch <n>', 'largest slice a worker computes at once (default 256)'],
  ['--step-timeout-ms <n>', 'drop a worker that has not answered a step after this long'],
  ['--backend <name>', 'backend for spawned workers: auto | tensorflow | wasm | cpu (default auto)'],
];

function addStartOptions(cmd: Command): Command {
  cmd.option('--config <file>', 'JSON file with any of these options (camelCase keys); flags override it');
  for (const [flags, desc] of START_OPTIONS) cmd.option(flags, desc);
  cmd.option('--resume', 'continue from the latest checkpoint in --out');
  cmd.option('--insecure', 'allow workers without a token on a non-loopback address');
  cmd.option('--download', 'download CIFAR-10 first if it is missing');
  cmd.option('--no-augment', 'turn off crop+flip augmentation');
  return cmd;
}

/** Commander options -> resolveConfig flags (CLI-only keys removed). */
export function configFromOptions(opts: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): RunConfig {
  const { config, download: _d, augment, ...rest } = opts;
  const flags: Record<string, unknown> = { ...rest };
  if (augment === false) flags.augment = false;
  return resolveConfig(flags, typeof config === 'string' ? config : undefined, env);
}

function describeLayers(report: unknown): string {
  const rows = Array.isArray(report) ? report : ((report as { layers?: unknown[] })?.layers ?? []);
  if (!rows.length) return JSON.stringify(report, null, 2);
  const keys = Object.keys(rows[0] as object);
  const line = (vals: unknown[]) => vals.map((v) => String(typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v).padStart(12)).join(' ');
  return [line(keys), ...rows.map((r) => line(keys.map((k) => (r as Record<string, unknown>)[k])))].join('\n');
}

async function modelFor(cfg: Pick<RunConfig, 'model' | 'svd' | 'decomposition' | 'forward' | 'seed'>): Promise<unknown> {
  const build = await peers.buildResNet();
  const depth = cfg.model === 'resnet18' ? 'resnet18' : Number(cfg.model.slice(6));
  // Seeded from the run seed, so a run (and the parity tests' single-process reference) is reproducible.
  return build({ depth, svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, seed: cfg.seed });
}

async function modelFromCheckpoint(path: string): Promise<{ ckpt: CheckpointLike; model: unknown; cfg: RunConfig }> {
  if (!existsSync(path)) throw usageError(`Checkpoint ${JSON.stringify(path)} does not exist. Fix: pass a file from runs/NAME/checkpoints/.`);
  const ckpt = (await peers.loadCheckpoint())(path);
  const cfg = resolveConfig({}, ckpt.config as Record<string, unknown>, {});
  await (await peers.initEngine())({ backend: cfg.backend === 'tensorflow' ? 'tensorflow' : 'auto' });
  const model = await modelFor(cfg);
  (await peers.setParameters())(model, ckpt.params);
  if (ckpt.buffers?.length) (await peers.setBuffers())(model, ckpt.buffers);
  return { ckpt, model, cfg };
}

async function flopsAtEnergies(model: unknown, energies: number[]): Promise<FlopsRow[]> {
  const count = await peers.countFlops();
  const prune = await peers.pruneByEnergy();
  const f = (m: unknown) => {
    const r = count(m);
    return typeof r === 'number' ? { flops: r } : r;
  };
  const rows: FlopsRow[] = [{ label: 'full', ...f(model) }];
  for (const e of energies) rows.push({ label: `pruned e=${e}`, ...f(prune(model, e).model) });
  return rows;
}

async function startCommand(opts: Record<string, unknown>, io: Out): Promise<number> {
  const cfg = configFromOptions(opts);
  const outDir = resolve(cfg.out);
  mkdirSync(join(outDir, 'checkpoints'), { recursive: true });
  writeFileSync(join(outDir, 'config.json'), JSON.stringify({ ...serializeConfig(cfg), configHash: configHash(cfg) }, null, 2) + '\n');
  const dataDir = resolveDataDir({ flag: cfg.data }).dir;
  const engine = await (await peers.initEngine())({ backend: 'cpu' });
  io.err(`coordinator: initial weights built on ${engine.backend}\n`);
  let initialParams: unknown;
  let initialBuffers: unknown;
  let resumeFrom: CheckpointLike | null = null;
  if (cfg.resume) {
    const latest = (await peers.latestCheckpoint())(join(outDir, 'checkpoints'));
    if (!latest) throw usageError(`--resume: no checkpoint in ${join(outDir, 'checkpoints')}. Fix: drop --resume to start fresh, or point --out at the run to continue.`);
    resumeFrom = (await peers.loadCheckpoint())(latest, { configHash: configHash(cfg) });
    io.err(`resuming from ${latest} (step ${resumeFrom.step}, epoch ${resumeFrom.epoch})\n`);
  } else {
    const model = await modelFor(cfg);
    if (cfg.from) {
      const ck = (await peers.loadCheckpoint())(cfg.from);
      (await peers.setParameters())(model, ck.params);
      if (ck.buffers?.length) (await peers.setBuffers())(model, ck.buffers);
      io.err(`fine-tuning from ${cfg.from}\n`);
    }
    initialParams = (await peers.getParameters())(model);
    initialBuffers = (await peers.getBuffers())(model);
  }
  const tty = Boolean(process.stderr.isTTY);
  let bar: ProgressBar | null = null;
  const Coordinator = await peers.Coordinator();
  const coord = new Coordinator({
    config: cfg,
    dataDir,
    outDir,
    initialParams,
    initialBuffers,
    resumeFrom,
    onLog: (line: string) => io.err(`${line}\n`),
    onStep: (s: Record<string, any>) => {
      if (tty) {
        if (!bar || s.stepInEpoch === 0) bar = new ProgressBar({ label: `epoch ${s.epoch + 1}/${cfg.epochs}`, total: s.stepsPerEpoch ?? null, unit: 'steps' });
        bar.update((s.stepInEpoch ?? 0) + 1, `${Math.round(s.imgPerSec ?? 0)} img/s loss ${Number(s.loss?.ce ?? s.ce).toFixed(3)} acc ${(100 * (s.trainAcc ?? 0)).toFixed(1)}%`);
      } else if (s.step % 10 === 0) {
        io.err(`step ${s.step} epoch ${s.epoch} loss ${Number(s.loss?.ce ?? s.ce).toFixed(4)} acc ${(100 * (s.trainAcc ?? 0)).toFixed(1)}% lr ${Number(s.lr).toExponential(2)} ${Math.round(s.imgPerSec ?? 0)} img/s\n`);
      }
    },
    onEpoch: (e: Record<string, any>) => {
      (bar as ProgressBar | null)?.done();
      bar = null;
      const test = typeof e.testAcc === 'number' ? ` test acc ${(100 * e.testAcc).toFixed(2)}%` : '';
      io.err(`epoch ${e.epoch} done: train loss ${Number(e.trainLoss ?? e.ce).toFixed(4)} train acc ${(100 * (e.trainAcc ?? 0)).toFixed(2)}%${test}\n`);
    },
  });
  let workers: ReturnType<typeof spawnWorkers> | null = null;
  const cleanup = async () => {
    await workers?.killAll();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    io.err(`received ${sig}; stopping workers\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const running = coord.start();
    if (cfg.spawn > 0) workers = spawnWorkers(cfg.spawn, { port: cfg.port, backend: cfg.backend, token: cfg.token, data: cfg.data, write: io.err });
    const summary = await running;
    io.err(`training finished: ${JSON.stringify(summary)}\n`);
  } finally {
    await cleanup();
  }
  try {
    const latest = (await peers.latestCheckpoint())(join(outDir, 'checkpoints'));
    await reportCommand(outDir, io, latest);
  } catch (e) {
    io.err(`report: ${(e as Error).message}\n`);
  }
  return 0;
}

async function reportCommand(runDir: string, io: Out, ckptPath?: string | null): Promise<number> {
  if (!existsSync(runDir)) throw usageError(`Run folder ${JSON.stringify(runDir)} does not exist. Fix: pass a folder written by \`svd-coord start --out DIR\`.`);
  const notes: string[] = [];
  let params: CheckpointLike['params'] | undefined;
  let flops: FlopsRow[] | undefined;
  try {
    const path = ckptPath ?? (await peers.latestCheckpoint())(join(runDir, 'checkpoints'));
    if (path) {
      const { ckpt, model } = await modelFromCheckpoint(path);
      params = ckpt.params;
      notes.push(`Spectra and FLOPs from ${path} (step ${ckpt.step}).`);
      try {
        flops = await flopsAtEnergies(model, [0.01, 0.05]);
      } catch (e) {
        notes.push(`FLOPs not computed: ${(e as Error).message}`);
      }
    } else notes.push('No checkpoint found: no spectra or FLOPs.');
  } catch (e) {
    notes.push(`Checkpoint not read: ${(e as Error).message}`);
  }
  const out = writeReport(runDir, { params, flops, notes });
  io.out(`${out}\n`);
  return 0;
}

async function evalCommand(path: string, opts: { data?: string; limitTest?: string }, io: Out): Promise<number> {
  const { model, cfg } = await modelFromCheckpoint(path);
  const test = readCifar10(resolveDataDir({ flag: opts.data ?? cfg.data }).dir, 'test');
  const n = Math.min(test.count, opts.limitTest ? Number(opts.limitTest) : (cfg.limitTest ?? test.count));
  const ev = await peers.evaluate();
  let correct = 0;
  let lossSum = 0;
  for (let lo = 0; lo < n; lo += cfg.maxWorkerBatch) {
    const idx = Int32Array.from({ length: Math.min(cfg.maxWorkerBatch, n - lo) }, (_, i) => lo + i);
    const { x, y } = assembleBatch(test, idx, { seed: 0, epoch: 0, augment: false });
    const r = ev(model, x, y);
    correct += r.correct;
    lossSum += r.lossSum;
  }
  io.out(`${path}: test accuracy ${((100 * correct) / n).toFixed(2)}% (${correct}/${n}), loss ${(lossSum / n).toFixed(4)}\n`);
  return 0;
}

async function pruneCommand(path: string, opts: { energy: string; out?: string }, io: Out): Promise<number> {
  const e = Number(opts.energy);
  if (!(e >= 0 && e < 1)) throw usageError(`--energy ${JSON.stringify(opts.energy)} is not valid; expected a fraction in [0, 1), e.g. --energy 0.01 (drop singular values holding 1% of the energy).`);
  const { ckpt, model } = await modelFromCheckpoint(path);
  const { model: pruned, report } = (await peers.pruneByEnergy())(model, e);
  io.out(`${describeLayers(report)}\n`);
  const outPath = opts.out ?? path.replace(/(\.[^./]+)?$/, `.pruned-e${e}$1`);
  (await peers.saveCheckpoint())(outPath, { ...ckpt, params: (await peers.getParameters())(pruned), buffers: (await peers.getBuffers())(pruned) });
  io.out(`pruned checkpoint written to ${outPath}; fine-tune with \`svd-coord start --from ${outPath}\`\n`);
  return 0;
}

async function exportCommand(path: string, opts: { out: string; stock?: boolean }, io: Out): Promise<number> {
  const { model } = await modelFromCheckpoint(path);
  const m = opts.stock ? (await peers.exportToStockLayers())(model) : model;
  const io2 = (await peers.fileSystemIO())(opts.out);
  await (m as { save(h: unknown): Promise<unknown> }).save(io2);
  io.out(`model written to ${opts.out}${opts.stock ? ' (stock tfjs layers, loadable without svd-train)' : ''}\n`);
  return 0;
}

/** Builds the `svd-coord` program; `io` is injectable for tests. */
export function buildCoordProgram(io: Out = defaultIo, setCode: (c: number) => void = () => {}): Command {
  const program = new Command('svd-coord')
    .description('Train SVD-decomposed ResNets on CIFAR-10, data-parallel over WebSocket workers.')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError('(run with --help for usage)');
  const wrap = <A extends unknown[]>(fn: (...a: A) => Promise<number>) => async (...a: A) => setCode(await fn(...a));

  addStartOptions(program.command('start').description('run the coordinator (and with --spawn K, K local workers)'))
    .addHelpText('after', '\nExamples:\n  svd-coord start --spawn 2 --epochs 3\n  svd-coord start --host 0.0.0.0 --token $TOKEN   # then svd-worker --gpu 0 on each machine')
    .action(wrap((opts: Record<string, unknown>) => startCommand(opts, io)));
  program
    .command('eval')
    .description('test accuracy of a checkpoint')
    .argument('<ckpt>', 'checkpoint file')
    .option('--data <dir>', 'CIFAR-10 folder')
    .option('--limit-test <n>', 'only the first n test images')
    .action(wrap((p: string, o: { data?: string; limitTest?: string }) => evalCommand(p, o, io)));
  program
    .command('prune')
    .description('truncate singular values holding at most a fraction e of each layer\'s energy')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--energy <e>', 'energy fraction to drop, e.g. 0.01')
    .option('--out <file>', 'pruned checkpoint path (default: next to the input)')
    .action(wrap((p: string, o: { energy: string; out?: string }) => pruneCommand(p, o, io)));
  program
    .command('export')
    .description('write the model as a tfjs LayersModel folder')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--out <dir>', 'output folder')
    .option('--stock', 'convert SVD layers to stock Conv2D/Dense layers')
    .action(wrap((p: string, o: { out: string; stock?: boolean }) => exportCommand(p, o, io)));
  program
    .command('report')
    .description('write runs/NAME/report.html: curves, regularizers, spectra, FLOPs')
    .argument('<run>', 'run folder, e.g. runs/latest')
    .action(wrap((run: string) => reportCommand(resolve(run), io)));
  program
    .command('download')
    .description('download CIFAR-10 (binary version, md5-checked)')
    .option('--dir <dir>', 'destination (default: the cache folder, or SVD_TRAIN_DATA)')
    .action(
      wrap(async (o: { dir?: string }) => {
        const dir = o.dir ?? resolveDataDir({ flag: null }).dir;
        await (await peers.downloadCifar10())(dir, {});
        io.out(`CIFAR-10 ready in ${dir}\n`);
        return 0;
      }),
    );
  return program;
}

/** Entry point of bin/svd-coord.js. */
export async function runCoordCli(argv: string[]): Promise<void> {
  let code = 0;
  try {
    await buildCoordProgram(defaultIo, (c) => (code = c)).parseAsync(argv);
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
}

void SvdTrainError;
