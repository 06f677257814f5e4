/**
 * `svd-coord`: start a distributed training run, and work on its checkpoints (eval, prune, export,
 * report, download). Every training option goes through core's `resolveConfig(flags, file, env)`,
 * so flags, a --config JSON file and SVD_TRAIN_* variables mean the same thing everywhere.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command } from 'commander';
import {
  CIFAR_SPLIT_FILES,
  EpochSampler,
  ProgressBar,
  SvdTrainError,
  assembleBatch,
  configHash,
  downloadCifar10,
  ensureCifar10,
  latestCheckpoint,
  loadCheckpoint,
  md5File,
  parseConfig,
  readCifar10,
  resolveConfig,
  resolveDataDir,
  saveCheckpoint,
  serializeConfig,
  type Checkpoint,
  type DatasetInfo,
  type RunConfig,
} from '@svd-train/core';
import {
  buildResNet,
  countMacs,
  evaluate,
  exportToStockLayers,
  fileSystemIO,
  getBuffers,
  getParameters,
  initEngine,
  noDecayParameterNames,
  plainResNetCost,
  pruneByEnergy,
  energyForMacs,
  setBuffers,
  setParameters,
  svdRanks,
} from '@svd-train/layers';
import { Coordinator, type EpochEvent, type LogLevel, type StepEvent } from '@svd-train/coordinator';
import { reportError, usageError, quietOnClosedStdout } from './cli-errors.js';
import { readTlsFiles, resolveToken } from './secrets.js';
import { writeReport, type MacsRow, type PipelineSummary, type PipelinePoint } from './report.js';
import { spawnWorkers } from './spawn-workers.js';

type Model = ReturnType<typeof buildResNet>;
type Cifar = ReturnType<typeof readCifar10>;
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
  ['--momentum <x>', 'SGD momentum when it does not cycle (default 0.9)'],
  ['--weight-decay <x>', 'L2 weight decay (default 5e-4)'],
  ['--decay-on <set>', 'all | factors: decay every parameter, or only U, V and plain weights (not singular values, BN, biases) (default all)'],
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
  ['--from <ckpt>', 'start from this checkpoint\'s weights with a fresh optimizer and schedule (fine-tuning, e.g. after prune; its per-layer ranks are used)'],
  ['--ranks <spec>', 'per-layer SVD ranks, e.g. "stem.0=3,layers.0.conv1=4" or JSON (default: full rank, or the --from checkpoint\'s)'],
  ['--token <secret>', 'shared worker token; visible in `ps`: prefer --token-file or SVD_TRAIN_TOKEN'],
  ['--eval-every <n>', 'evaluate on the test set every n epochs (0 = never; default 1)'],
  ['--checkpoint-every <n>', 'also checkpoint every n steps (default 200)'],
  ['--max-worker-batch <n>', 'largest slice a worker computes at once (default 256)'],
  ['--step-timeout-ms <n>', 'drop a worker that has not answered a step after this long (default 120000)'],
  ['--stall-warn-ms <n>', 'warn about a worker that has not answered after this long (default 30000, or a quarter of a shorter --step-timeout-ms)'],
  ['--backend <name>', 'engine for spawned workers: auto | tensorflow | native | wasm | cpu (default auto: the first that loads, in that order)'],
  ['--threads <n>', 'oneDNN threads per spawned worker on the native engine (default 1: one worker per core)'],
  ['--prune-energy <e>', 'after training, prune singular values holding at most a fraction e of each layer\'s energy, evaluate before/after and a sweep of energies (writes pipeline.json)'],
  ['--prune-macs <n>', 'instead of --prune-energy: prune at the smallest energy whose model costs at most n MACs per image (e.g. 13.6e6, a third of plain ResNet-20)'],
  ['--finetune-epochs <n>', 'with --prune-energy or --prune-macs: then fine-tune the pruned model for n epochs in <out>/finetune (default 0)'],
  ['--finetune-lr <x>', 'peak learning rate of the fine-tuning (default: --lr / 10); sparsity is off while fine-tuning'],
  ['--sweep-energies <list>', 'energies of the accuracy-vs-MACs curve, evaluated without fine-tuning (default 0.001,0.003,0.01,0.03,0.05,0.1,0.2)'],
];

function addStartOptions(cmd: Command): Command {
  cmd.option('--config <file>', 'JSON file with any of these options (camelCase keys); flags override it');
  for (const [flags, desc] of START_OPTIONS) cmd.option(flags, desc);
  cmd.option('--resume', 'continue from the latest checkpoint in --out');
  cmd.option('--insecure', 'allow workers without a token on a non-loopback address');
  cmd.option('--token-file <file>', 'read the shared worker token from the first line of this file (stays out of `ps`)');
  cmd.option('--tls-cert <file>', 'PEM certificate (chain): serve wss:// (with --tls-key)');
  cmd.option('--tls-key <file>', 'PEM private key of --tls-cert');
  cmd.option('--download', 'download CIFAR-10 first if it is missing');
  cmd.option('--no-augment', 'turn off crop+flip augmentation');
  cmd.option('--no-nesterov', 'plain momentum instead of Nesterov');
  cmd.option('--no-cycle-momentum', 'onecycle: keep --momentum constant instead of cycling it 0.95 -> 0.85 -> 0.95');
  return cmd;
}

/** Commander options -> resolveConfig flags (CLI-only keys removed). */
export function configFromOptions(opts: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env, warn: (s: string) => void = () => {}): RunConfig {
  const { config, download: _d, augment, nesterov, cycleMomentum, tokenFile, tlsCert: _c, tlsKey: _k, token, ...rest } = opts;
  const flags: Record<string, unknown> = { ...rest };
  // The token file wins over SVD_TRAIN_TOKEN like any flag; it goes through resolveConfig as `token`.
  if (token !== undefined || tokenFile !== undefined) flags.token = resolveToken({ token: token as string | undefined, tokenFile: tokenFile as string | undefined }, warn, env);
  // commander sets negatable options to true when absent; only an explicit --no-X overrides the config file.
  if (augment === false) flags.augment = false;
  if (nesterov === false) flags.nesterov = false;
  if (cycleMomentum === false) flags.cycleMomentum = false;
  return resolveConfig(flags, typeof config === 'string' ? config : undefined, env);
}

/** A per-layer report as an aligned text table. */
export function describeLayers(report: unknown): string {
  const rows = Array.isArray(report) ? report : ((report as { layers?: unknown[] })?.layers ?? []);
  if (!rows.length) return JSON.stringify(report, null, 2);
  const keys = Object.keys(rows[0] as object);
  const cell = (v: unknown) => String(typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v);
  const table = [keys.map((k) => k.replace(/^macs/, 'MACs')), ...rows.map((r) => keys.map((k) => cell((r as Record<string, unknown>)[k])))];
  const widths = keys.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  // Names left-aligned, numbers right-aligned.
  return table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

function modelFor(cfg: Pick<RunConfig, 'model' | 'svd' | 'decomposition' | 'forward' | 'seed' | 'ranks'>): Model {
  const depth = depthOf(cfg.model);
  // Seeded from the run seed, so a run (and the parity tests' single-process reference) is reproducible.
  return buildResNet({ depth, svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, ranks: cfg.ranks, seed: cfg.seed });
}

/**
 * Per-layer ranks of a checkpoint: those of its config (`svd-coord prune` writes them), else, for
 * pruned checkpoints written before configs had ranks, read off the `….s` shapes when they differ
 * from the full-rank model of `cfg`. null when the checkpoint is full rank.
 */
function checkpointRanks(ckpt: Checkpoint, cfg: RunConfig): Record<string, number> | null {
  const own = parseConfig(ckpt.config).ranks;
  if (own !== null) return own;
  const fromShapes: Record<string, number> = {};
  for (const t of ckpt.params) if (t.name.endsWith('.s') && t.shape.length === 1) fromShapes[t.name.slice(0, -2)] = t.shape[0]!;
  if (Object.keys(fromShapes).length === 0) return null;
  const full = modelFor({ ...cfg, ranks: null });
  const fullRanks = svdRanks(full);
  full.dispose();
  return Object.entries(fromShapes).some(([m, r]) => fullRanks[m] !== r) ? fromShapes : null;
}

function loadCheckpointFile(path: string): Checkpoint {
  if (!existsSync(path)) throw usageError(`Checkpoint ${JSON.stringify(path)} does not exist. Fix: pass a file from runs/NAME/checkpoints/.`);
  return loadCheckpoint(path);
}

/** Loads a checkpoint into its model, on `backend` (default: the backend its run was configured with). */
async function modelFromCheckpoint(path: string, backend?: string, io?: Out): Promise<{ ckpt: Checkpoint; model: Model; cfg: RunConfig }> {
  const ckpt = loadCheckpointFile(path);
  let cfg = resolveConfig(backend ? { backend } : {}, ckpt.config as Record<string, unknown>, {});
  const engine = await initEngine({ backend: cfg.backend, resolveFrom: import.meta.url });
  io?.err(`backend ${engine.reason}\n`);
  cfg = { ...cfg, ranks: checkpointRanks(ckpt, cfg) };
  const model = modelFor(cfg);
  setParameters(model, ckpt.params);
  if (ckpt.buffers.length) setBuffers(model, ckpt.buffers);
  return { ckpt, model, cfg };
}

/**
 * Refuses a --from checkpoint whose tensors do not fit the model the config builds (another
 * --model or --decomposition, or --ranks other than the checkpoint's): workers build from the
 * config, so they could never take it.
 */
function checkShapes(ckpt: Checkpoint, want: { name: string; shape: number[] }[], path: string): void {
  const got = new Map(ckpt.params.map((t) => [t.name, t.shape]));
  for (const w of want) {
    const g = got.get(w.name);
    if (!g || g.join(',') !== w.shape.join(',')) {
      throw new SvdTrainError(
        'CHECKPOINT_CONFIG_MISMATCH',
        `--from ${path}: parameter ${w.name} has shape ${g ? `[${g.join(', ')}]` : 'nothing'} in the checkpoint, the model of this config has [${w.shape.join(', ')}]. ` +
          'Fix: pass the same --model and --decomposition as the checkpoint, and no --ranks (the checkpoint\'s own ranks are then used).',
      );
    }
  }
}

/** What the coordinator tells workers about the data: sizes after the limits, md5 of every file. */
function datasetInfoFor(dir: string, cfg: RunConfig): DatasetInfo {
  const train = readCifar10(dir, 'train');
  const test = readCifar10(dir, 'test');
  const md5s: Record<string, string> = {};
  for (const f of [...CIFAR_SPLIT_FILES.train, ...CIFAR_SPLIT_FILES.test]) md5s[f] = md5File(join(dir, f));
  return {
    trainCount: Math.min(train.count, cfg.limitTrain ?? train.count),
    testCount: Math.min(test.count, cfg.limitTest ?? test.count),
    md5s,
  };
}

/** depth of `cfg.model` for buildResNet / plainResNetCost. */
function depthOf(model: RunConfig['model']): 20 | 32 | 44 | 56 | 110 | 'resnet18' {
  return model === 'resnet18' ? 'resnet18' : (Number(model.slice(6)) as 20 | 32 | 44 | 56 | 110);
}

/** MACs per image of the plain ResNet of `cfg.model`, the SVD model and its prunes at `energies`. */
function macsAtEnergies(model: Model, cfg: RunConfig, energies: number[]): MacsRow[] {
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  const rows: MacsRow[] = [{ label: `plain ${cfg.model}`, macs: plain.macs, params: plain.params }];
  const full = countMacs(model);
  rows.push({ label: cfg.ranks ? 'this model' : 'full rank', macs: full.total, params: full.exportParams });
  for (const e of energies) {
    const pruned = pruneByEnergy(model, e);
    const c = countMacs(pruned.model);
    rows.push({ label: `pruned e=${e}`, macs: c.total, params: c.exportParams });
    pruned.model.dispose();
  }
  return rows;
}

/** Inference-mode accuracy and mean loss of `model` on the first `n` images of `test`, in chunks. */
function testAccuracy(model: Model, test: Cifar, n: number, chunk: number): { acc: number; loss: number; correct: number; n: number } {
  let correct = 0;
  let lossSum = 0;
  for (let lo = 0; lo < n; lo += chunk) {
    const idx = Int32Array.from({ length: Math.min(chunk, n - lo) }, (_, i) => lo + i);
    const { x, y } = assembleBatch(test, idx, { seed: 0, epoch: 0, augment: false });
    const r = evaluate(model, x, y);
    correct += r.correct;
    lossSum += r.lossSum;
  }
  return { acc: correct / n, loss: lossSum / n, correct, n };
}

/**
 * Writes `pruned` as a checkpoint derived from `ckpt`. The config carries the new ranks, so its
 * hash and every model built from it (start --from, eval, workers) have the pruned shapes. The
 * optimizer state is dropped: its momentum buffers have the old shapes, and fine-tuning starts a
 * fresh optimizer anyway. `out` is a folder (the file gets the usual ckpt-<step> name) or, ending
 * in .svdckpt, the file itself. Returns the written path.
 */
function writePrunedCheckpoint(ckpt: Checkpoint, cfg: RunConfig, pruned: Model, energy: number, out: string): string {
  const outFile = out.endsWith('.svdckpt') ? resolve(out) : null;
  if (outFile) mkdirSync(dirname(outFile), { recursive: true });
  const outDir = outFile ? mkdtempSync(join(dirname(outFile), '.prune-')) : out;
  // The pipeline keys describe the run that made it, not this model: a later start --from must not re-prune.
  const prunedCfg: RunConfig = { ...cfg, ranks: svdRanks(pruned), pruneEnergy: null, finetuneEpochs: 0 };
  const written = saveCheckpoint(outDir, {
    ...ckpt,
    config: serializeConfig(prunedCfg),
    configHash: configHash(prunedCfg),
    params: getParameters(pruned),
    buffers: getBuffers(pruned),
    optimizer: { kind: ckpt.optimizer.kind, step: 0, slots: {} },
    metrics: { ...(ckpt.metrics ?? {}), prunedEnergy: energy },
  });
  if (!outFile) return written;
  // Written complete in a private folder first, then renamed: never a half file at --out, and
  // never a clash with a checkpoint of the same step already in the target folder.
  renameSync(written, outFile);
  rmSync(outDir, { recursive: true, force: true });
  return outFile;
}

/** Shared by both phases of `start`: where the data is and who prints. */
interface StartContext {
  dataDir: string;
  info: DatasetInfo;
  io: Out;
  /** --tls-cert/--tls-key read, and the certificate's path (spawned workers trust exactly it). */
  tls?: { tls: NonNullable<ReturnType<typeof readTlsFiles>>; certPath: string };
}

async function startCommand(opts: Record<string, unknown>, io: Out): Promise<number> {
  let cfg = configFromOptions(opts, process.env, io.err);
  const tls = readTlsFiles(opts as { tlsCert?: string; tlsKey?: string });
  const outDir = resolve(cfg.out);
  const data = await ensureCifar10({ flag: cfg.data, download: Boolean(opts.download) });
  // config.json and the checkpoints keep the folder resolved to an absolute path, so `eval` run
  // from another folder still finds the data (a relative --data used to break it). Run-local:
  // not part of the config hash.
  cfg = { ...cfg, data: data.dir };
  const info = datasetInfoFor(data.dir, cfg);
  const engine = await initEngine({ backend: 'auto', resolveFrom: import.meta.url });
  io.err(`coordinator: data ${data.dir} (${info.trainCount} train / ${info.testCount} test); initial weights on ${engine.backend}\n`);
  const ctx: StartContext = { dataDir: data.dir, info, io, ...(tls ? { tls: { tls, certPath: String(opts.tlsCert) } } : {}) };
  const trained = await trainPhase(cfg, ctx);
  if (cfg.pruneEnergy !== null || cfg.pruneMacs !== null) await pruneAndFinetune(trained, outDir, ctx);
  try {
    await reportCommand(outDir, { out: io.err, err: io.err });
  } catch (e) {
    io.err(`report not written: ${(e as Error).message}\n`);
  }
  return 0;
}

/**
 * The method after training (`start --prune-energy e [--finetune-epochs k]`), on the training
 * phase's final checkpoint: test accuracy of the trained model; a sweep of energies pruned and
 * evaluated without fine-tuning (the accuracy-vs-MACs curve, cheap: one inference pass each);
 * the model pruned at e saved as <out>/pruned-e<e>.svdckpt; then, with k > 0, a fine-tuning run
 * in <out>/finetune (its own config, metrics and checkpoints; fresh optimizer, peak lr
 * finetuneLr or lr/10, no sparsity term) and its test accuracy. Everything goes to
 * <out>/pipeline.json, which the report plots.
 */
async function pruneAndFinetune(cfg: RunConfig, outDir: string, ctx: StartContext): Promise<PipelineSummary> {
  const { io } = ctx;
  const latest = latestCheckpoint(join(outDir, 'checkpoints'), { configHash: configHash(cfg), onWarning: (m) => io.err(`warning: ${m}\n`) });
  if (!latest) throw new SvdTrainError('CHECKPOINT_CORRUPT', `--prune-energy: no valid checkpoint of this run in ${join(outDir, 'checkpoints')} to prune; expected the training phase to have written one. Fix: rerun start, or prune a checkpoint with svd-coord prune.`);
  const test = readCifar10(ctx.dataDir, 'test');
  const n = Math.min(test.count, cfg.limitTest ?? test.count);
  const chunk = cfg.maxWorkerBatch;
  const model = modelFor(cfg);
  setParameters(model, latest.checkpoint.params);
  if (latest.checkpoint.buffers.length) setBuffers(model, latest.checkpoint.buffers);
  const point = (m: Model, energy: number): PipelinePoint => {
    const c = countMacs(m);
    const r = testAccuracy(m, test, n, chunk);
    return { energy, acc: r.acc, loss: r.loss, macs: c.total, params: c.params, exportParams: c.exportParams };
  };
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  let e = cfg.pruneEnergy ?? 0;
  if (cfg.pruneMacs !== null) {
    const found = energyForMacs(model, cfg.pruneMacs);
    e = found.energy;
    io.err(`pipeline: --prune-macs ${cfg.pruneMacs}: energy ${e} is the smallest that prunes to at most that (${(found.macs / 1e6).toFixed(2)}M MACs per image)\n`);
  }
  io.err(`pipeline: evaluating the trained model and ${cfg.sweepEnergies.length} pruning energies on ${n} test images\n`);
  const full = point(model, 0);
  const sweep: PipelinePoint[] = [full];
  let prunedPoint: PipelinePoint | null = null;
  let prunedPath = '';
  let ranks: Record<string, number> = {};
  for (const energy of [...new Set([...cfg.sweepEnergies, e])].sort((a, b) => a - b)) {
    if (energy === 0) continue;
    const { model: pruned } = pruneByEnergy(model, energy);
    const p = point(pruned, energy);
    sweep.push(p);
    io.err(`  e=${energy}: test accuracy ${(100 * p.acc).toFixed(2)}%, ${(p.macs / 1e6).toFixed(2)}M MACs (${((100 * p.macs) / plain.macs).toFixed(1)}% of plain ${cfg.model})\n`);
    if (energy === e) {
      prunedPoint = p;
      ranks = svdRanks(pruned);
      prunedPath = writePrunedCheckpoint(latest.checkpoint, cfg, pruned, e, join(outDir, `pruned-e${e}.svdckpt`));
    }
    pruned.dispose();
  }
  model.dispose();
  if (e === 0) {
    // Energy 0 prunes nothing: the "pruned" model is the trained one, saved as such for fine-tuning.
    const again = modelFor(cfg);
    setParameters(again, latest.checkpoint.params);
    if (latest.checkpoint.buffers.length) setBuffers(again, latest.checkpoint.buffers);
    prunedPoint = full;
    ranks = svdRanks(again);
    prunedPath = writePrunedCheckpoint(latest.checkpoint, cfg, again, 0, join(outDir, 'pruned-e0.svdckpt'));
    again.dispose();
  }
  const summary: PipelineSummary = {
    model: cfg.model,
    energy: e,
    testImages: n,
    plain: { macs: plain.macs, params: plain.params },
    trained: full,
    pruned: prunedPoint!,
    prunedCheckpoint: prunedPath,
    finetuned: null,
    sweep,
  };
  const write = () => writeFileSync(join(outDir, 'pipeline.json'), JSON.stringify(summary, null, 2) + '\n');
  write();
  if (cfg.finetuneEpochs > 0) {
    const ftDir = join(outDir, 'finetune');
    const lr = cfg.finetuneLr ?? cfg.lr / 10;
    const ftCfg: RunConfig = {
      ...cfg,
      from: prunedPath,
      ranks,
      epochs: cfg.finetuneEpochs,
      lr,
      lambdaS: 0,
      pruneEnergy: null,
      finetuneEpochs: 0,
      out: ftDir,
      resume: false,
    };
    io.err(`pipeline: fine-tuning the model pruned at e=${e} for ${cfg.finetuneEpochs} epoch(s), peak lr ${lr}, no sparsity term, in ${ftDir}\n`);
    const ft = await trainPhase(ftCfg, ctx);
    const last = latestCheckpoint(join(ftDir, 'checkpoints'), { configHash: configHash(ft) });
    if (!last) throw new SvdTrainError('CHECKPOINT_CORRUPT', `fine-tuning wrote no valid checkpoint in ${join(ftDir, 'checkpoints')}; expected one at its end. Fix: rerun, or fine-tune with start --from ${prunedPath}.`);
    const m = modelFor(ft);
    setParameters(m, last.checkpoint.params);
    if (last.checkpoint.buffers.length) setBuffers(m, last.checkpoint.buffers);
    summary.finetuned = { ...point(m, e), epochs: cfg.finetuneEpochs, lr, run: 'finetune' };
    m.dispose();
    write();
    try {
      await reportCommand(ftDir, { out: io.err, err: io.err });
    } catch (err) {
      io.err(`fine-tuning report not written: ${(err as Error).message}\n`);
    }
  }
  io.err(`${describePipeline(summary)}\n`);
  return summary;
}

/** The pipeline's before / after table, for the terminal. */
export function describePipeline(p: PipelineSummary): string {
  const pct = (x: number) => `${((100 * x) / p.plain.macs).toFixed(1)}%`;
  const rows: [string, PipelinePoint | null][] = [
    ['trained, full rank', p.trained],
    [`pruned at e=${p.energy}`, p.pruned],
    [`fine-tuned ${p.finetuned?.epochs ?? 0} epoch(s)`, p.finetuned],
  ];
  const lines = [
    `pipeline result on ${p.testImages} test images (MACs per image; FLOPs = 2·MACs):`,
    ...rows.filter(([, r]) => r).map(([label, r]) => `  ${label.padEnd(24)} test accuracy ${(100 * r!.acc).toFixed(2).padStart(6)}%  ${(r!.macs / 1e6).toFixed(2).padStart(7)}M MACs (${pct(r!.macs)} of plain ${p.model})  ${r!.exportParams} weights`),
    `  ${`plain ${p.model}`.padEnd(24)} ${' '.repeat(22)}${(p.plain.macs / 1e6).toFixed(2).padStart(7)}M MACs (100%)  ${p.plain.params} weights`,
  ];
  return lines.join('\n');
}

/**
 * One training run of `start` (the whole run, or the fine-tuning phase of the pipeline): the
 * coordinator on `cfg`, spawned workers, checkpoints and metrics in `cfg.out`. Returns the config
 * it trained (with the --from checkpoint's ranks filled in).
 */
async function trainPhase(startCfg: RunConfig, ctx: StartContext): Promise<RunConfig> {
  let cfg = startCfg;
  const { io, info } = ctx;
  const data = { dir: ctx.dataDir };
  const outDir = resolve(cfg.out);
  let fromCkpt: Checkpoint | undefined;
  if (cfg.from) {
    // Fine-tuning (also when resuming a fine-tuning run): the model takes the checkpoint's
    // per-layer ranks unless the user gave some, so a pruned checkpoint builds its smaller
    // shapes here and, through the config, on every worker. They are part of the config hash.
    fromCkpt = loadCheckpointFile(cfg.from);
    if (cfg.ranks === null) {
      const ranks = checkpointRanks(fromCkpt, cfg);
      if (ranks) {
        cfg = { ...cfg, ranks };
        io.err(`--from ${cfg.from}: per-layer ranks of the checkpoint (${Object.values(ranks).reduce((a, b) => a + b, 0)} singular values in ${Object.keys(ranks).length} SVD layers)\n`);
      }
    }
  }
  const hash = configHash(cfg);
  const ckptDir = join(outDir, 'checkpoints');
  let resume: Checkpoint | undefined;
  let from: Checkpoint | undefined;
  if (cfg.resume) {
    const latest = latestCheckpoint(ckptDir, { configHash: hash, onWarning: (m) => io.err(`warning: ${m}\n`) });
    if (!latest) throw usageError(`--resume: no valid checkpoint in ${ckptDir}. Fix: drop --resume to start fresh, or point --out at the run to continue.`);
    resume = latest.checkpoint;
    const total = EpochSampler.fromState(resume.sampler).stepsPerEpoch * cfg.epochs;
    if (resume.step >= total) {
      // Nothing to train: starting the server would wait for workers forever.
      io.err(
        `--resume: the run in ${outDir} already finished: ${latest.path} is at step ${resume.step} of ${total} (${cfg.epochs} epochs); nothing to do. ` +
          `Fix: to train longer, fine-tune from it with \`svd-coord start --from ${latest.path} --epochs N --out NEW_DIR\`; to evaluate it, \`svd-coord eval ${latest.path}\`.\n`,
      );
      // The training phase is over; with --prune-energy the pipeline goes on from its checkpoint.
      return cfg;
    }
    io.err(`resuming from ${latest.path} (step ${resume.step}, epoch ${resume.epoch})\n`);
  } else if (fromCkpt) {
    // Weights and BN statistics only: the optimizer, schedule, sampler and step count start fresh.
    from = fromCkpt;
    io.err(`fine-tuning from ${cfg.from} (step ${from.step}); fresh optimizer and schedule\n`);
  }
  // The model is built even when resuming: its manifest and BN parameter names are authoritative.
  const model = modelFor(cfg);
  if (from) checkShapes(from, getParameters(model), cfg.from!);
  mkdirSync(ckptDir, { recursive: true });
  writeFileSync(join(outDir, 'config.json'), JSON.stringify({ ...serializeConfig(cfg), configHash: hash }, null, 2) + '\n');

  const tty = Boolean(process.stderr.isTTY);
  let bar: ProgressBar | null = null;
  let stepsPerEpoch: number | null = null;
  let barDrawn = false;
  const newBar = (epoch: number) =>
    new ProgressBar({ label: `epoch ${epoch + 1}/${cfg.epochs}`, total: stepsPerEpoch ?? Math.ceil(info.trainCount / cfg.batch), unit: 'steps' });
  const coord = new Coordinator({
    config: cfg,
    datasetInfo: info,
    dataDir: data.dir,
    initialParams: getParameters(model),
    initialBuffers: getBuffers(model),
    ...(resume ? { resume } : {}),
    ...(from ? { from: { params: from.params, buffers: from.buffers } } : {}),
    noDecay: noDecayParameterNames(model),
    expectWorkers: cfg.spawn,
    ...(ctx.tls ? { tls: ctx.tls.tls } : {}),
    saveCheckpoint: (c) => void saveCheckpoint(ckptDir, c as Checkpoint, { keep: cfg.keepCheckpoints }),
    metricsPath: join(outDir, 'metrics.jsonl'),
    onLog: (level: LogLevel, line: string) => {
      if (level === 'debug') return;
      // End a half-drawn bar line first, so the log line starts at column 0.
      if (barDrawn) io.err('\n');
      barDrawn = false;
      io.err(`${level === 'info' ? '' : `${level}: `}${line}\n`);
    },
    onStep: (s: StepEvent) => {
      const note = `${Math.round(s.imgPerSec)} img/s loss ${s.loss.ce.toFixed(3)} acc ${(100 * s.trainAcc).toFixed(1)}%`;
      if (tty) {
        bar ??= newBar(s.epoch);
        bar.update(s.stepInEpoch + 1, note);
        barDrawn = s.stepInEpoch + 1 < s.stepsPerEpoch;
      } else if (s.step % 10 === 0 || s.stepInEpoch === s.stepsPerEpoch - 1) {
        io.err(`step ${s.step + 1}/${s.totalSteps} epoch ${s.epoch + 1} ${note} lr ${s.lr.toExponential(2)} workers ${s.workers}\n`);
      }
      stepsPerEpoch = s.stepsPerEpoch;
    },
    // The coordinator logs the epoch line itself (onLog); here the bar of the next epoch starts,
    // so its rate and ETA count from the epoch's start rather than from its first step's end.
    onEpoch: (e: EpochEvent) => {
      bar?.done();
      bar = tty && e.epoch + 1 < cfg.epochs ? newBar(e.epoch + 1) : null;
    },
    onWorkerJoin: () => {
      if (tty && !bar && stepsPerEpoch === null) bar = newBar(resume?.epoch ?? 0);
    },
  });
  let workers: ReturnType<typeof spawnWorkers> | null = null;
  let fatal: SvdTrainError | null = null;
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    io.err(`received ${sig}; stopping\n`);
    void Promise.all([coord.close(`coordinator got ${sig}`), workers?.killAll()]).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const { port } = await coord.listen();
    if (cfg.spawn > 0) {
      let failed = 0;
      workers = spawnWorkers(cfg.spawn, {
        port,
        backend: cfg.backend,
        threads: cfg.threads,
        token: cfg.token,
        // Spawned workers verify the certificate against itself, so it must name 127.0.0.1.
        ...(ctx.tls ? { tlsCa: ctx.tls.certPath } : {}),
        data: data.dir,
        write: io.err,
        // A spawned worker that exits with an error was refused or crashed; if all of them did,
        // nobody is left to train and waiting would hang forever.
        onExit: (i, code, signal) => {
          if (code === 0 || stopping) return;
          io.err(`worker w${i} exited (${code ?? signal})\n`);
          if (++failed === cfg.spawn) {
            // Not BACKEND_UNAVAILABLE: the workers may have died of anything (a crash, a refusal),
            // and this is no usage error, so it exits 1, not 2.
            fatal = new SvdTrainError(
              'WORKERS_FAILED',
              `all ${cfg.spawn} spawned worker(s) exited with an error (see their [wN] lines above); stopping. Fix: read the first [wN] error; if it names the engine, try --backend wasm or cpu.`,
            );
            void coord.close('all spawned workers failed');
          }
        },
      });
    }
    const summary = await coord.start().catch((e: unknown) => {
      throw fatal ?? e;
    });
    if (fatal) throw fatal;
    const acc = summary.finalTestAcc !== null ? `, test accuracy ${(100 * summary.finalTestAcc).toFixed(2)}%` : '';
    io.err(`training finished: ${summary.steps} steps in ${(summary.wallMs / 1000).toFixed(1)} s${acc}\n`);
  } finally {
    stopping = true;
    await workers?.killAll();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    // The pipeline runs a second phase in this process: free this one's initial weights.
    model.dispose();
  }
  return cfg;
}

async function reportCommand(runDir: string, io: Out): Promise<number> {
  if (!existsSync(runDir)) throw usageError(`Run folder ${JSON.stringify(runDir)} does not exist. Fix: pass a folder written by \`svd-coord start --out DIR\`.`);
  const notes: string[] = [];
  let params: Checkpoint['params'] | undefined;
  let macs: MacsRow[] | undefined;
  try {
    const latest = latestCheckpoint(join(runDir, 'checkpoints'));
    if (latest) {
      const { ckpt, model, cfg } = await modelFromCheckpoint(latest.path);
      params = ckpt.params;
      notes.push(`Spectra and MACs from ${latest.path} (step ${ckpt.step}).`);
      try {
        macs = macsAtEnergies(model, cfg, [0.01, 0.05]);
      } catch (e) {
        notes.push(`MACs not computed: ${(e as Error).message}`);
      }
      model.dispose();
    } else notes.push('No checkpoint found: no spectra or MACs.');
  } catch (e) {
    notes.push(`Checkpoint not read: ${(e as Error).message}`);
  }
  let pipeline: PipelineSummary | undefined;
  const pipelinePath = join(runDir, 'pipeline.json');
  if (existsSync(pipelinePath)) {
    try {
      pipeline = JSON.parse(readFileSync(pipelinePath, 'utf8')) as PipelineSummary;
    } catch (e) {
      notes.push(`pipeline.json not read: ${(e as Error).message}`);
    }
  }
  const out = writeReport(runDir, { params, macs, pipeline, notes });
  io.out(`report written to ${out}\n`);
  return 0;
}

/**
 * The checkpoint file `eval` (and the other checkpoint commands) should read: the file itself, or
 * for a run folder (or its checkpoints/ folder) the latest valid checkpoint in it, said out loud.
 */
export function checkpointArgument(path: string, io: Out): string {
  if (!existsSync(path) || !statSync(path).isDirectory()) return path;
  for (const dir of [join(path, 'checkpoints'), path]) {
    if (!existsSync(dir)) continue;
    const latest = latestCheckpoint(dir, { onWarning: (m) => io.err(`warning: ${m}\n`) });
    if (latest) {
      io.err(`${path} is a folder: using its latest checkpoint, ${latest.path} (step ${latest.checkpoint.step})\n`);
      return latest.path;
    }
  }
  throw usageError(
    `${JSON.stringify(path)} is a folder without checkpoints; expected a checkpoint file (ckpt-….svdckpt) or a run folder holding checkpoints/. ` +
      'Fix: pass e.g. runs/NAME/checkpoints/ckpt-0000000100.svdckpt, or the run folder of a run that has written a checkpoint.',
  );
}

/**
 * The test data for `eval`: --data, else the folder the run trained on (stored absolute), else the
 * usual SVD_TRAIN_DATA / cache lookup, so a checkpoint moved to another machine still evaluates.
 */
function evalDataDir(flag: string | undefined, runData: string | null, io: Out): string {
  if (flag) return resolveDataDir({ flag }).dir;
  if (runData) {
    try {
      return resolveDataDir({ flag: runData }).dir;
    } catch {
      io.err(`the run's data folder ${runData} has no CIFAR-10 here; looking in SVD_TRAIN_DATA and the cache (or pass --data DIR)\n`);
    }
  }
  return resolveDataDir({ flag: null }).dir;
}

async function evalCommand(pathArg: string, opts: { data?: string; limitTest?: string; backend?: string }, io: Out): Promise<number> {
  const path = checkpointArgument(pathArg, io);
  const { model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  const test = readCifar10(evalDataDir(opts.data, cfg.data, io), 'test');
  let limit: number | null = null;
  if (opts.limitTest !== undefined) {
    limit = Number(opts.limitTest);
    if (!(opts.limitTest.trim() !== '' && Number.isInteger(limit) && limit > 0)) {
      throw usageError(`--limit-test ${JSON.stringify(opts.limitTest)} is not valid; expected a whole number of test images > 0, e.g. --limit-test 1000.`);
    }
  } else if (cfg.limitTest !== null && cfg.limitTest < test.count) {
    // The whole test set by default: a training run's --limit-test (a quick check) is not what a
    // reported accuracy should silently use. Say so, and how to get the run's subset.
    io.err(`the training run evaluated only the first ${cfg.limitTest} test images (--limit-test ${cfg.limitTest}); this uses all ${test.count}. Pass --limit-test ${cfg.limitTest} for the run's subset.\n`);
  }
  const n = Math.min(test.count, limit ?? test.count);
  const r = testAccuracy(model, test, n, cfg.maxWorkerBatch);
  const c = countMacs(model);
  io.out(`${path}: test accuracy ${(100 * r.acc).toFixed(2)}% (${r.correct}/${n}), loss ${r.loss.toFixed(4)}, ${(c.total / 1e6).toFixed(2)}M MACs per image\n`);
  return 0;
}

async function pruneCommand(pathArg: string, opts: { energy: string; out?: string; backend?: string }, io: Out): Promise<number> {
  const e = Number(opts.energy);
  if (!(opts.energy.trim() !== '' && e >= 0 && e < 1)) {
    throw usageError(`--energy ${JSON.stringify(opts.energy)} is not valid; expected a fraction in [0, 1), e.g. --energy 0.01 (drop singular values holding 1% of the energy).`);
  }
  const path = checkpointArgument(pathArg, io);
  const { ckpt, model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  const { model: pruned, report } = pruneByEnergy(model, e);
  io.out(`${describeLayers(report)}\n`);
  const sum = (k: 'paramsBefore' | 'paramsAfter' | 'macsBefore' | 'macsAfter') => report.reduce((a, r) => a + r[k], 0);
  io.out(`SVD layers: params ${sum('paramsBefore')} -> ${sum('paramsAfter')}, MACs/image ${sum('macsBefore')} -> ${sum('macsAfter')}\n`);
  // The whole model against the plain ResNet of the same depth: what users compare with.
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  const [before, after] = [countMacs(model), countMacs(pruned)];
  const pct = (x: number) => `${((100 * x) / plain.macs).toFixed(1)}%`;
  io.out(
    `whole model: MACs/image ${before.total} (${pct(before.total)} of plain ${cfg.model}) -> ${after.total} (${pct(after.total)}); ` +
      `stock-export weights ${before.exportParams} -> ${after.exportParams}; plain ${cfg.model}: ${plain.macs} MACs, ${plain.params} weights. FLOPs = 2·MACs.\n`,
  );
  const final = writePrunedCheckpoint(ckpt, cfg, pruned, e, opts.out ?? join(path.replace(/[^/]+$/, ''), `pruned-e${e}`));
  model.dispose();
  pruned.dispose();
  io.out(`pruned checkpoint written to ${final}\n`);
  return 0;
}

async function exportCommand(pathArg: string, opts: { out: string; stock?: boolean; foldBn?: boolean; backend?: string }, io: Out): Promise<number> {
  if (opts.foldBn && !opts.stock) throw usageError('--fold-bn needs --stock: only the stock export folds batch norm into the convs. Fix: add --stock.');
  const { model } = await modelFromCheckpoint(checkpointArgument(pathArg, io), opts.backend, io);
  const m = opts.stock ? exportToStockLayers(model, { foldBatchNorm: Boolean(opts.foldBn) }) : model;
  await m.save(fileSystemIO(opts.out));
  const c = countMacs(m);
  io.out(
    `model written to ${opts.out}${opts.stock ? ` (stock tfjs layers${opts.foldBn ? ', BN folded into the convs' : ''}, loadable without svd-train)` : ''}: ` +
      `${(c.total / 1e6).toFixed(2)}M MACs per image, ${c.exportParams} weights in the form that runs\n`,
  );
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
    .addHelpText('after', '\nExamples:\n  svd-coord start --spawn 2 --epochs 3\n  svd-coord start --host 0.0.0.0 --token-file token.txt --tls-cert cert.pem --tls-key key.pem   # then svd-worker --coordinator wss://HOST:7733 --ca cert.pem --token-file token.txt on each machine')
    .action(wrap((opts: Record<string, unknown>) => startCommand(opts, io)));
  program
    .command('eval')
    .description('test accuracy of a checkpoint')
    .argument('<ckpt>', 'checkpoint file, or a run folder (its latest checkpoint is used)')
    .option('--data <dir>', 'CIFAR-10 folder (default: the run\'s, then SVD_TRAIN_DATA, then the cache)')
    .option('--limit-test <n>', 'only the first n test images (default: the whole test set, even if the run used --limit-test)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(wrap((p: string, o: { data?: string; limitTest?: string; backend?: string }) => evalCommand(p, o, io)));
  program
    .command('prune')
    .description('truncate singular values holding at most a fraction e of each layer\'s energy')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--energy <e>', 'energy fraction to drop, e.g. 0.01')
    .option('--out <path>', 'folder for the pruned checkpoint, or a file name ending in .svdckpt (default: pruned-e<E>/ next to the input)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(wrap((p: string, o: { energy: string; out?: string; backend?: string }) => pruneCommand(p, o, io)));
  program
    .command('export')
    .description('write the model as a tfjs LayersModel folder')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--out <dir>', 'output folder')
    .option('--stock', 'write stock Conv2D/Dense layers: one per SVD layer where merged is cheaper, two where factored is')
    .option('--fold-bn', 'with --stock: fold each batch norm into the conv before it (inference only)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(wrap((p: string, o: { out: string; stock?: boolean; foldBn?: boolean; backend?: string }) => exportCommand(p, o, io)));
  program
    .command('report')
    .description('write runs/NAME/report.html: curves, regularizers, spectra, MACs, the pruning pipeline')
    .argument('<run>', 'run folder, e.g. runs/latest')
    .action(wrap((run: string) => reportCommand(resolve(run), io)));
  program
    .command('download')
    .description('download CIFAR-10 (binary version, md5-checked)')
    .option('--dir <dir>', 'destination (default: the cache folder, or SVD_TRAIN_DATA)')
    .action(
      wrap(async (o: { dir?: string }) => {
        const dir = o.dir ?? resolveDataDir({ flag: null }).dir;
        await downloadCifar10(dir, {});
        io.out(`CIFAR-10 ready in ${dir}\n`);
        return 0;
      }),
    );
  return program;
}

/** Entry point of bin/svd-coord.js. */
export async function runCoordCli(argv: string[]): Promise<void> {
  quietOnClosedStdout();
  let code = 0;
  try {
    await buildCoordProgram(defaultIo, (c) => (code = c)).parseAsync(argv);
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
  // The command is over: a peer's socket or a stray timer must not keep `svd-coord start` alive
  // after training. An unref'd timer fires only if something else still holds the event loop.
  setTimeout(() => process.exit(code), 2000).unref();
}

