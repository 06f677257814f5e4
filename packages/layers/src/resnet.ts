/**
 * CIFAR ResNets (He et al. 2016, option-B shortcuts) built from our SVD layers, NHWC, with the
 * module structure of the PyTorch reference `CifarResNet`, so that every weight has a PyTorch
 * `state_dict` name (see parameter-names.ts).
 *
 * stem = conv3×3(3→w0, s1, p1) → BN → ReLU; basic blocks `layers.k` numbered across stages:
 * relu(bn1(conv1(x))) → bn2(conv2(·)) + shortcut(x) → ReLU, shortcut = 1×1 conv (stride) → BN when
 * the stride or the width changes, else identity; then global average pooling and `fc`.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type RunConfig, type ResNetDepth } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { SVDBatchNorm } from './batch-norm.js';
import { layerNameFor } from './parameter-names.js';
import { countMacs } from './macs.js';
import { sameMatchesPadding } from './padding.js';

export interface BuildResNetOptions {
  /** CIFAR ResNet-(6n+2) depth, or the CIFAR variant of ResNet-18. */
  depth: ResNetDepth;
  /** SVD layers (default true); false builds plain convs (no bias) and a plain dense fc. */
  svd?: boolean;
  /** How SVD convs split their weight (default 'channel'). */
  decomposition?: 'channel' | 'spatial';
  /** Classes of the fc (default 10). */
  numClasses?: number;
  /** Override the stage widths (e.g. [4, 8, 16] for the ResNet-8 reference). */
  widths?: number[];
  /** Override blocks per stage. */
  blocks?: number[];
  /** Override stage strides. */
  strides?: number[];
  /** Forward mode of the SVD convs (default 'auto'). */
  forward?: 'auto' | 'reconstruct' | 'factored';
  /** Rank of every SVD layer (default full rank); clipped to each layer's full rank. */
  rank?: number;
  /**
   * Per-layer ranks by PyTorch module name ('stem.0', 'layers.3.conv1', 'layers.3.shortcut.0',
   * 'fc'), over `rank`; e.g. the ranks of a pruned checkpoint (`svdRanks(pruned)`). The layers keep
   * `forward` (default 'auto': each runs its cheaper form at its rank), as `pruneModel` builds
   * them, so the model equals the pruned one. Every key must name an SVD layer of this model and
   * every rank must be at most that layer's full rank.
   */
  ranks?: Readonly<Record<string, number>> | null;
  /** The config field `ranks` came from, for error messages (default 'ranks'; e.g. 'teacherRanks'). */
  ranksField?: string;
  /** Base seed of the initialisation; layer i uses seed + i (default 0). */
  seed?: number;
  /**
   * Each batch norm carries the ReLU (and in bn2 the shortcut's add) that follows it, as one layer
   * and, on the native engine, one kernel each way (default true). false builds separate ReLU and
   * Add layers, as models did before; the outputs are the same. For benchmarks (bench prune).
   */
  fuseBatchNorm?: boolean;
  /** Input [H, W, C] (default [32, 32, 3]). */
  inputShape?: [number, number, number];
}

interface Arch {
  widths: number[];
  blocks: number[];
  strides: number[];
}

function archFor(depth: ResNetDepth): Arch {
  if (depth === 'resnet18') return { widths: [64, 128, 256, 512], blocks: [2, 2, 2, 2], strides: [1, 2, 2, 2] };
  if (![20, 32, 44, 56, 110].includes(depth)) {
    throw new SvdTrainError('CONFIG_INVALID', `ResNet depth ${String(depth)}; expected 20, 32, 44, 56, 110 or 'resnet18'`);
  }
  const n = (depth - 2) / 6;
  return { widths: [16, 32, 64], blocks: [n, n, n], strides: [1, 2, 2] };
}

function convFullRank(decomposition: 'channel' | 'spatial', cin: number, filters: number, k: number): number {
  return decomposition === 'spatial' ? Math.min(filters * k, cin * k) : Math.min(filters, cin * k * k);
}

/** Module name -> full rank of every SVD layer the builder creates, in build order (same walk as buildResNet). */
function svdFullRanks(a: Arch & { decomposition: 'channel' | 'spatial'; numClasses: number; inChannels: number }): Map<string, number> {
  const out = new Map<string, number>([['stem.0', convFullRank(a.decomposition, a.inChannels, a.widths[0], 3)]]);
  let cin = a.widths[0];
  let k = 0;
  for (let stage = 0; stage < a.widths.length; stage++) {
    for (let b = 0; b < a.blocks[stage]; b++, k++) {
      const stride = b === 0 ? a.strides[stage] : 1;
      const cout = a.widths[stage];
      out.set(`layers.${k}.conv1`, convFullRank(a.decomposition, cin, cout, 3));
      out.set(`layers.${k}.conv2`, convFullRank(a.decomposition, cout, cout, 3));
      if (stride !== 1 || cin !== cout) out.set(`layers.${k}.shortcut.0`, convFullRank(a.decomposition, cin, cout, 1));
      cin = cout;
    }
  }
  out.set('fc', Math.min(cin, a.numClasses));
  return out;
}

/** buildResNet's depth for a config model name: 'resnet20' -> 20, 'resnet18' -> 'resnet18'. */
export function depthOf(model: RunConfig['model']): ResNetDepth {
  return model === 'resnet18' ? 'resnet18' : (Number(model.slice('resnet'.length)) as Exclude<ResNetDepth, 'resnet18'>);
}

/**
 * The model a run config describes, seeded from the run seed. The coordinator's CLI (initial
 * weights, checkpoint commands) and every worker build it this way, so their parameter names and
 * shapes agree, and a run (and the parity tests' single-process reference) is reproducible.
 */
export function buildResNetForConfig(cfg: Pick<RunConfig, ConfigArch | 'ranks'>): tf.LayersModel {
  return buildResNet({ ...archOptions(cfg), ranks: cfg.ranks });
}

/** The config fields that fix a model's architecture and initialisation, ranks aside. */
type ConfigArch = 'model' | 'svd' | 'decomposition' | 'forward' | 'seed';

function archOptions(cfg: Pick<RunConfig, ConfigArch>): BuildResNetOptions {
  return { depth: depthOf(cfg.model), svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, seed: cfg.seed };
}

/**
 * The teacher model a distilling run config describes: config.teacherArch (the run's model, svd
 * and decomposition when null) at config.teacherRanks (full rank when null). Errors about those
 * ranks name `teacherRanks`.
 */
export function buildTeacherForConfig(cfg: Pick<RunConfig, ConfigArch | 'teacherRanks' | 'teacherArch'>): tf.LayersModel {
  return buildResNet({ ...archOptions({ ...cfg, ...cfg.teacherArch }), ranks: cfg.teacherRanks, ranksField: 'teacherRanks' });
}

/** Builds the model (functional API, NHWC input [batch, H, W, C], logits [batch, numClasses]). */
export function buildResNet(opts: BuildResNetOptions): tf.LayersModel {
  const base = archFor(opts.depth);
  const widths = opts.widths ?? base.widths;
  const blocks = opts.blocks ?? base.blocks;
  const strides = opts.strides ?? base.strides;
  if (widths.length !== blocks.length || widths.length !== strides.length) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `widths (${widths.length}), blocks (${blocks.length}) and strides (${strides.length}) must have the same length`,
    );
  }
  const svd = opts.svd ?? true;
  const decomposition = opts.decomposition ?? 'channel';
  const numClasses = opts.numClasses ?? 10;
  const forward = opts.forward ?? 'auto';
  const baseSeed = opts.seed ?? 0;
  let layerIndex = 0;
  const inputShape = opts.inputShape ?? [32, 32, 3];
  const ranks = opts.ranks ?? {};
  const field = opts.ranksField ?? 'ranks';
  // Checked before any layer exists, so a bad override leaks no weights.
  if (Object.keys(ranks).length > 0) {
    if (!svd) {
      throw new SvdTrainError('CONFIG_INVALID', `${field} ${JSON.stringify(ranks)} given for a model without SVD layers (svd: false); drop them or build with svd: true`);
    }
    const full = svdFullRanks({ widths, blocks, strides, decomposition, numClasses, inChannels: inputShape[2] });
    for (const [module, r] of Object.entries(ranks)) {
      const f = full.get(module);
      if (f === undefined) {
        throw new SvdTrainError(
          'CONFIG_INVALID',
          `${field} name '${module}', which is not an SVD layer of this model; its SVD layers are ${[...full.keys()].join(', ')}`,
        );
      }
      if (!Number.isInteger(r) || r < 1 || r > f) {
        throw new SvdTrainError('CONFIG_INVALID', `${field}['${module}'] = ${r}; expected an integer in [1, ${f}] (the layer's full rank)`);
      }
    }
  }
  /** Rank of SVD layer `module` with full rank `full`: its override, else the global rank clipped. */
  const rankOf = (module: string, full: number): number | undefined =>
    (Object.hasOwn(ranks, module) ? ranks[module] : undefined) ?? (opts.rank === undefined ? undefined : Math.min(opts.rank, full));

  const conv = (module: string, x: tf.SymbolicTensor, cin: number, filters: number, k: number, stride: number, pad: number) => {
    const name = layerNameFor(module);
    const seed = baseSeed + layerIndex++;
    if (!svd) {
      // PyTorch padding p on every side: 'same' where that is what it does (stride 1), else explicit
      // zero padding then a 'valid' conv ('same' pads after only at stride 2).
      const same = sameMatchesPadding([k, k], [stride, stride], [pad, pad, pad, pad]);
      const padded = pad > 0 && !same ? (tf.layers.zeroPadding2d({ padding: pad, name: `${name}_pad` }).apply(x) as tf.SymbolicTensor) : x;
      return tf.layers
        .conv2d({
          name,
          filters,
          kernelSize: k,
          strides: stride,
          padding: same ? 'same' : 'valid',
          useBias: false,
          kernelInitializer: tf.initializers.heNormal({ seed }),
        })
        .apply(padded) as tf.SymbolicTensor;
    }
    const full = convFullRank(decomposition, cin, filters, k);
    return new SVDConv2D({
      name,
      filters,
      kernelSize: k,
      strides: stride,
      padding: pad,
      useBias: false,
      decomposition,
      forward,
      rank: rankOf(module, full),
      seed,
    }).apply(x) as tf.SymbolicTensor;
  };
  // Batch norm carries what follows it (the ReLU; in bn2, the shortcut's add first): one layer,
  // and on the native engine one kernel each way, instead of two or three passes over the
  // activations.
  const bn = (module: string, x: tf.SymbolicTensor) =>
    new SVDBatchNorm({ name: layerNameFor(module) }).apply(x) as tf.SymbolicTensor;
  const fuse = opts.fuseBatchNorm ?? true;
  const bnRelu = (module: string, x: tf.SymbolicTensor, shortcut?: tf.SymbolicTensor): tf.SymbolicTensor => {
    if (fuse) {
      return new SVDBatchNorm({ name: layerNameFor(module), activation: 'relu', residual: shortcut !== undefined })
        .apply(shortcut ? [x, shortcut] : x) as tf.SymbolicTensor;
    }
    const name = layerNameFor(module);
    let y = bn(module, x);
    if (shortcut) y = tf.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as tf.SymbolicTensor;
    return tf.layers.reLU({ name: `${name}_relu` }).apply(y) as tf.SymbolicTensor;
  };

  const input = tf.input({ shape: inputShape, name: 'input' });
  let x = conv('stem.0', input, inputShape[2], widths[0], 3, 1, 1);
  x = bnRelu('stem.1', x);
  let cin = widths[0];
  let k = 0;
  for (let stage = 0; stage < widths.length; stage++) {
    for (let b = 0; b < blocks[stage]; b++, k++) {
      const stride = b === 0 ? strides[stage] : 1;
      const cout = widths[stage];
      const p = `layers.${k}`;
      let out = conv(`${p}.conv1`, x, cin, cout, 3, stride, 1);
      out = bnRelu(`${p}.bn1`, out);
      let short = x;
      if (stride !== 1 || cin !== cout) short = bn(`${p}.shortcut.1`, conv(`${p}.shortcut.0`, x, cin, cout, 1, stride, 0));
      x = bnRelu(`${p}.bn2`, conv(`${p}.conv2`, out, cout, cout, 3, 1, 1), short);
      cin = cout;
    }
  }
  x = tf.layers.globalAveragePooling2d({ name: 'pool' }).apply(x) as tf.SymbolicTensor;
  const fc = svd
    ? new SVDDense({ name: 'fc', units: numClasses, useBias: true, rank: rankOf('fc', Math.min(cin, numClasses)), forward, seed: baseSeed + layerIndex++ })
    : tf.layers.dense({ name: 'fc', units: numClasses, useBias: true, kernelInitializer: tf.initializers.heNormal({ seed: baseSeed + layerIndex++ }) });
  const logits = fc.apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: logits, name: `resnet${opts.depth === 'resnet18' ? '18' : opts.depth}` });
}

/**
 * MACs per image and weights of the plain (non-SVD) ResNet with the same architecture: what users
 * compare an SVD model with. Builds the plain model, counts it and disposes it (milliseconds).
 */
export function plainResNetCost(opts: Omit<BuildResNetOptions, 'svd' | 'ranks' | 'rank' | 'forward'>): { macs: number; params: number } {
  const m = buildResNet({ ...opts, svd: false });
  try {
    const c = countMacs(m);
    return { macs: c.total, params: c.params };
  } finally {
    m.dispose();
  }
}
