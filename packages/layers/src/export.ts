/**
 * Saving, loading and exporting models.
 *
 * - `fileSystemIO(dir)`: a tfjs IOHandler writing `model.json` + `weights.bin` with node:fs, because
 *   `file://` needs tfjs-node, which is optional here. Our layer classes are registered with
 *   `tf.serialization` by importing this module, so `tf.loadLayersModel` reads our models back.
 * - `exportToStockLayers(model, { foldBatchNorm })`: an equivalent model made only of stock
 *   tfjs-layers classes, for consumers that have plain `@tensorflow/tfjs` and none of our code. Each
 *   SVD layer is written in the form it runs (the same MAC-based choice as `call` and `countMacs`):
 *   merged, one Conv2D (or Dense) with W = U·diag(s)·Vᵀ, which at full rank is exactly the plain
 *   layer; or factored, the two convs (dense layers) of the rank-r bottleneck. Padding is explicit
 *   (ZeroPadding2D + 'valid'). Each SVDBatchNorm becomes a stock BatchNormalization with the same
 *   epsilon and statistics (followed by Add and ReLU layers where it carries a residual and a
 *   ReLU) or, with `foldBatchNorm`, is folded into the conv before it (scale the
 *   filter per output channel, add a bias), which removes a pass over the activations. The export
 *   is for inference: the training-mode BN of tfjs differs from PyTorch's (biased running
 *   variance), which does not matter once the statistics are fixed.
 *
 * Loading an export in Node: `tf.loadLayersModel('file://…')` needs `@tensorflow/tfjs-node`. With
 * plain `@tensorflow/tfjs`, read the two files and pass them through `tf.io.fromMemory` (the README
 * shows it; export.test.ts runs it in a process that has none of our code), or use `fileSystemIO`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { SVDBatchNorm } from './batch-norm.js';
import { sameMatchesPadding } from './padding.js';

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

/**
 * Refuses `dir` as the folder of a model to save unless it is absent, empty, or holds only a
 * previous model (model.json, weights.bin): a save replaces the folder whole, and must not take a
 * user's other files (or a checkpoint folder) with it.
 */
export function checkModelFolder(dir: string): void {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) {
    throw new SvdTrainError('CONFIG_INVALID', `${dir} is a file; expected a folder to hold ${MODEL_JSON} and ${WEIGHTS_BIN}. Fix: pass a new folder, e.g. ${dir}-model.`);
  }
  const other = readdirSync(dir).filter((f) => f !== MODEL_JSON && f !== WEIGHTS_BIN);
  if (other.length > 0) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `${dir} holds ${other.slice(0, 3).join(', ')}${other.length > 3 ? `, … (${other.length} entries)` : ''}, not only a saved model; saving there would replace the folder. Fix: pass a new or empty folder.`,
    );
  }
}

/**
 * IOHandler for `model.save(fileSystemIO(dir))` and `tf.loadLayersModel(fileSystemIO(dir))`. A
 * save writes both files into a new folder beside `dir` and renames it into place (moving a previous
 * model aside first), so `dir` never holds a model.json with another save's weights.bin; a crash
 * between the two renames leaves the folder absent, both versions whole beside it.
 */
export function fileSystemIO(dir: string): tf.io.IOHandler {
  return {
    save: (artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> => settle(() => {
      checkModelFolder(dir);
      const weights = artifacts.weightData ? tf.io.CompositeArrayBuffer.join(artifacts.weightData) : new ArrayBuffer(0);
      const json = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
      };
      const parent = dirname(resolve(dir));
      mkdirSync(parent, { recursive: true });
      // mkdirSync, not mkdtempSync: the folder keeps the usual permissions (mkdtemp's are 0700).
      const fresh = join(parent, `.${basename(resolve(dir))}.save-${process.pid}-${randomBytes(4).toString('hex')}`);
      mkdirSync(fresh);
      try {
        writeFileSync(join(fresh, WEIGHTS_BIN), new Uint8Array(weights));
        writeFileSync(join(fresh, MODEL_JSON), JSON.stringify(json));
        if (existsSync(dir)) {
          const previous = `${fresh}-previous`;
          renameSync(dir, previous);
          renameSync(fresh, dir);
          rmSync(previous, { recursive: true, force: true });
        } else renameSync(fresh, dir);
      } finally {
        rmSync(fresh, { recursive: true, force: true });
      }
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
    load: (): Promise<tf.io.ModelArtifacts> => settle(() => {
      let json: tf.io.ModelJSON;
      try {
        json = JSON.parse(readFileSync(join(dir, MODEL_JSON), 'utf8')) as tf.io.ModelJSON;
      } catch (e) {
        throw new SvdTrainError('CHECKPOINT_CORRUPT', `cannot read ${join(dir, MODEL_JSON)}: ${(e as Error).message}; expected a model saved with fileSystemIO`);
      }
      const specs = json.weightsManifest.flatMap((g) => g.weights);
      const bytes = readFileSync(join(dir, WEIGHTS_BIN));
      const need = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1) * 4, 0);
      if (bytes.byteLength !== need) {
        throw new SvdTrainError('CHECKPOINT_CORRUPT', `${join(dir, WEIGHTS_BIN)} has ${bytes.byteLength} bytes, expected ${need} for the manifest`);
      }
      const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return tf.io.getModelArtifactsForJSONSync(json, specs, weightData);
    }),
  };
}

/** Runs `f` now and hands its result (or its throw, as a rejection) over as a promise. */
function settle<T>(f: () => T): Promise<T> {
  return new Promise((resolve) => resolve(f()));
}

/** Saves `model` to an in-memory artifacts object (model.json content + weights). */
export async function saveToMemory(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let out: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler((a) =>
      settle(() => {
        out = a;
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
      }),
    ),
  );
  return out!;
}

/** Loads a model from `saveToMemory`'s artifacts. */
export function loadFromMemory(artifacts: tf.io.ModelArtifacts): Promise<tf.LayersModel> {
  return tf.loadLayersModel(tf.io.fromMemory(artifacts));
}

interface LayerEntry {
  name: string;
  className: string;
  config: Record<string, unknown>;
  inboundNodes: unknown[];
}

/** Options of `exportToStockLayers`. */
export interface StockExportOptions {
  /**
   * Fold each batch norm into the conv that feeds it (default false). Only where the conv's output
   * goes to that BN alone, which is every conv of our ResNets. Outputs equal the unfolded export's up
   * to float32 rounding.
   */
  foldBatchNorm?: boolean;
}

function firstShape(s: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(s[0]) ? s[0] : s) as tf.Shape;
}

const conv = (name: string, filters: number, kernelSize: number[], strides: number[], useBias: boolean, padding: 'valid' | 'same' = 'valid'): Record<string, unknown> => ({
  name,
  filters,
  kernelSize,
  strides,
  padding,
  dataFormat: 'channelsLast',
  dilationRate: [1, 1],
  activation: 'linear',
  useBias,
  trainable: true,
});

const dense = (name: string, units: number, useBias: boolean): Record<string, unknown> => ({ name, units, useBias, activation: 'linear', trainable: true });

/** Names of the layers an inbound-node list refers to ([[[name, node, tensor, kwargs], …], …]). */
function inboundNames(nodes: unknown[]): string[] {
  return (nodes as unknown[][][]).flatMap((node) => node.map((ref) => ref[0] as string));
}

function renameInbound(nodes: unknown[], alias: Map<string, string>): unknown[] {
  return (nodes as unknown[][][]).map((node) => node.map((ref) => (alias.has(ref[0] as string) ? [alias.get(ref[0] as string), ...ref.slice(1)] : ref)));
}

/**
 * Folds every stock BatchNormalization whose only input is a Conv2D that feeds nothing else:
 * with scale = γ/√(var + ε), the conv becomes K·scale (per output channel) with bias
 * (b − mean)·scale + β, and the BN disappears (its consumers read the conv). Returns the new layer
 * list; `weights` is updated in place and new tensors are added to `owned`.
 */
function foldBatchNorms(layers: LayerEntry[], weights: Map<string, tf.Tensor[]>, outputs: unknown[], owned: tf.Tensor[]): LayerEntry[] {
  const consumers = new Map<string, number>();
  for (const l of layers) for (const n of inboundNames(l.inboundNodes)) consumers.set(n, (consumers.get(n) ?? 0) + 1);
  for (const o of outputs as unknown[][]) consumers.set(o[0] as string, (consumers.get(o[0] as string) ?? 0) + 1);
  const byName = new Map(layers.map((l) => [l.name, l]));
  const isOutput = new Set((outputs as unknown[][]).map((o) => o[0] as string));
  const alias = new Map<string, string>();
  const out: LayerEntry[] = [];
  for (const l of layers) {
    const entry = { ...l, inboundNodes: renameInbound(l.inboundNodes, alias) };
    const src = inboundNames(l.inboundNodes);
    const prev = src.length === 1 ? byName.get(src[0]) : undefined;
    if (l.className !== 'BatchNormalization' || isOutput.has(l.name) || !prev || prev.className !== 'Conv2D' || consumers.get(prev.name) !== 1) {
      out.push(entry);
      continue;
    }
    const [gamma, beta, mean, variance] = weights.get(l.name)!;
    const [kernel, bias] = weights.get(prev.name)!;
    const eps = l.config.epsilon as number;
    const folded = tf.tidy(() => {
      const scale = tf.div(gamma, tf.sqrt(tf.add(variance, eps)));
      const b = bias ? tf.sub(bias, mean) : tf.neg(mean);
      return [tf.mul(kernel, scale), tf.add(tf.mul(b, scale), beta)];
    });
    owned.push(...folded);
    weights.set(prev.name, folded);
    weights.delete(l.name);
    prev.config.useBias = true;
    alias.set(l.name, prev.name);
  }
  // The conv config objects were edited in place above; `out` holds them.
  return out;
}

/**
 * The same network in stock tfjs-layers classes only (inference semantics; see the module doc).
 * Layer names: a merged SVD layer N stays `N`; a factored one becomes `N_v` (first factor) and `N`
 * (second factor, + bias); ZeroPadding2D layers `N_pad*` go in front where a conv pads and
 * 'same' would pad otherwise (stride 2). With
 * `foldBatchNorm` the BN layers after convs are gone. The graph is otherwise unchanged.
 */
export function exportToStockLayers(model: tf.LayersModel, opts: StockExportOptions = {}): tf.LayersModel {
  const cfg = JSON.parse(JSON.stringify(model.getConfig())) as { name: string; layers: LayerEntry[]; outputLayers: unknown[] };
  let layers: LayerEntry[] = [];
  const weights = new Map<string, tf.Tensor[]>();
  const owned: tf.Tensor[] = [];
  try {
    // A fused batch norm's output is its last added layer (N_add or N_relu): later layers read that.
    const alias = new Map<string, string>();
    for (const entry of cfg.layers) {
      const layer = model.getLayer(entry.name);
      const N = entry.name;
      let inbound = renameInbound(entry.inboundNodes, alias);
      const push = (name: string, className: string, config: Record<string, unknown>): void => {
        layers.push({ name, className, config: { ...config, name }, inboundNodes: inbound });
        inbound = [[[name, 0, 0, {}]]];
      };
      if (layer instanceof SVDConv2D) {
        const { n, c, kh, kw } = layer.geometry();
        const r = layer.rank;
        const [, h, w] = firstShape(layer.inboundNodes[0].inputShapes) as number[];
        const [top, bottom, left, right] = layer.explicitPadding(h, w);
        const [sh, sw] = layer.strides;
        const bias = layer.bias ? [layer.bias.read()] : [];
        // A k×k conv: 'same' where it pads as PyTorch does, else ZeroPadding2D in front and 'valid'.
        const padded = (name: string, k: [number, number], strides: [number, number], pads: [number, number, number, number]): 'same' | 'valid' => {
          if (sameMatchesPadding(k, strides, pads)) return 'same';
          const [pt, pb, pl, pr] = pads;
          if (pt || pb || pl || pr) push(name, 'ZeroPadding2D', { padding: [[pt, pb], [pl, pr]], dataFormat: 'channelsLast' });
          return 'valid';
        };
        if (layer.forwardFor(h, w) === 'reconstruct') {
          const k = layer.reconstructWeight();
          owned.push(k);
          const padding = padded(`${N}_pad`, [kh, kw], [sh, sw], [top, bottom, left, right]);
          push(N, 'Conv2D', conv(N, n, [kh, kw], [sh, sw], layer.useBias, padding));
          weights.set(N, [k, ...bias]);
          continue;
        }
        const [k1, k2] = tf.tidy(() => {
          const Vs = tf.mul(layer.V.read(), layer.s.read());
          const U = layer.U.read();
          if (layer.decomposition === 'channel') {
            return [tf.transpose(tf.reshape(Vs, [c, kh, kw, r]), [1, 2, 0, 3]), tf.reshape(tf.transpose(U), [1, 1, r, n])];
          }
          return [
            tf.reshape(tf.transpose(tf.reshape(Vs, [c, kh, r]), [1, 0, 2]), [kh, 1, c, r]),
            tf.reshape(tf.transpose(tf.reshape(U, [n, kw, r]), [1, 2, 0]), [1, kw, r, n]),
          ];
        });
        owned.push(k1, k2);
        if (layer.decomposition === 'channel') {
          const padding = padded(`${N}_pad`, [kh, kw], [sh, sw], [top, bottom, left, right]);
          push(`${N}_v`, 'Conv2D', conv(`${N}_v`, r, [kh, kw], [sh, sw], false, padding));
          push(N, 'Conv2D', conv(N, n, [1, 1], [1, 1], layer.useBias));
        } else {
          const padH = padded(`${N}_pad_h`, [kh, 1], [sh, 1], [top, bottom, 0, 0]);
          push(`${N}_v`, 'Conv2D', conv(`${N}_v`, r, [kh, 1], [sh, 1], false, padH));
          const padW = padded(`${N}_pad_w`, [1, kw], [1, sw], [0, 0, left, right]);
          push(N, 'Conv2D', conv(N, n, [1, kw], [1, sw], layer.useBias, padW));
        }
        weights.set(`${N}_v`, [k1]);
        weights.set(N, [k2, ...bias]);
      } else if (layer instanceof SVDDense) {
        const bias = layer.bias ? [layer.bias.read()] : [];
        if (layer.forwardFor() === 'reconstruct') {
          const k = layer.reconstructKernel();
          owned.push(k);
          push(N, 'Dense', dense(N, layer.units, layer.useBias));
          weights.set(N, [k, ...bias]);
          continue;
        }
        const [vs, ut] = tf.tidy((): [tf.Tensor, tf.Tensor] => [tf.mul(layer.V.read(), layer.s.read()), tf.transpose(layer.U.read())]);
        owned.push(vs, ut);
        push(`${N}_v`, 'Dense', dense(`${N}_v`, layer.rank, false));
        push(N, 'Dense', dense(N, layer.units, layer.useBias));
        weights.set(`${N}_v`, [vs]);
        weights.set(N, [ut, ...bias]);
      } else if (layer instanceof SVDBatchNorm) {
        // A fused layer (ReLU, residual) becomes BN `N`, then Add `N_add` with the residual, then
        // ReLU `N_relu`; the layers after it read the last one.
        const [[main, ...rest]] = inbound as unknown[][][];
        if (layer.residual) inbound = [[main]];
        push(N, 'BatchNormalization', {
          axis: -1,
          // tfjs momentum is the weight of the old value: PyTorch 0.1 ≡ tfjs 0.9.
          momentum: 1 - layer.momentum,
          epsilon: layer.epsilon,
          center: true,
          scale: true,
          trainable: true,
        });
        const bySuffix = new Map(layer.weights.map((w) => [w.originalName.split('/').pop()!, w.read()]));
        weights.set(N, ['gamma', 'beta', 'movingMean', 'movingVariance'].map((k) => bySuffix.get(k)!));
        let last = N;
        if (layer.residual) {
          inbound = [[...(inbound as unknown[][])[0], ...rest]];
          push((last = `${N}_add`), 'Add', { trainable: true });
        }
        if (layer.activation === 'relu') push((last = `${N}_relu`), 'ReLU', { maxValue: null, trainable: true });
        if (last !== N) alias.set(N, last);
      } else {
        layers.push({ ...entry, inboundNodes: inbound });
        // getWeights() returns the variables themselves (not copies): never dispose them.
        if (layer.weights.length > 0) weights.set(N, layer.getWeights());
      }
    }
    cfg.outputLayers = renameInbound([cfg.outputLayers], alias)[0] as unknown[];
    if (opts.foldBatchNorm) layers = foldBatchNorms(layers, weights, cfg.outputLayers, owned);
    const fromConfig = (tf.LayersModel as unknown as { fromConfig: (cls: unknown, c: unknown) => tf.LayersModel }).fromConfig;
    const out = fromConfig(tf.LayersModel, { ...cfg, name: `${cfg.name}_stock`, layers });
    for (const [name, ws] of weights) out.getLayer(name).setWeights(ws);
    return out;
  } finally {
    tf.dispose(owned);
  }
}
