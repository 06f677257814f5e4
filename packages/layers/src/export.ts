/**
 * Saving, loading and exporting models.
 *
 * - `fileSystemIO(dir)`: a tfjs IOHandler writing `model.json` + `weights.bin` with node:fs, because
 *   `file://` needs tfjs-node, which is optional here. Our layer classes are registered with
 *   `tf.serialization` by importing this module, so `tf.loadLayersModel` reads our models back.
 * - `exportToStockLayers(model)`: an equivalent model made only of stock tfjs-layers classes, for
 *   consumers that have plain `@tensorflow/tfjs` and none of our code. Each SVD conv becomes the two
 *   convs of its factored forward (PyTorch-style symmetric padding via ZeroPadding2D + 'valid'),
 *   each SVD dense two dense layers, each SvdBatchNorm a stock BatchNormalization with the same
 *   epsilon and statistics. The export is for inference: the training-mode BN of tfjs differs
 *   from PyTorch's (biased running variance), which does not matter once the statistics are fixed.
 */
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { SvdBatchNorm } from './batch-norm.js';

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

/** IOHandler for `model.save(fileSystemIO(dir))` and `tf.loadLayersModel(fileSystemIO(dir))`. */
export function fileSystemIO(dir: string): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      mkdirSync(dir, { recursive: true });
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
      // Write-then-rename so a crash never leaves a model.json pointing at half a weights file.
      writeFileSync(join(dir, `${WEIGHTS_BIN}.tmp`), new Uint8Array(weights));
      writeFileSync(join(dir, `${MODEL_JSON}.tmp`), JSON.stringify(json));
      renameSync(join(dir, `${WEIGHTS_BIN}.tmp`), join(dir, WEIGHTS_BIN));
      renameSync(join(dir, `${MODEL_JSON}.tmp`), join(dir, MODEL_JSON));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
    async load(): Promise<tf.io.ModelArtifacts> {
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
      const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      return tf.io.getModelArtifactsForJSONSync(json, specs, weightData);
    },
  };
}

/** Saves `model` to an in-memory artifacts object (model.json content + weights). */
export async function saveToMemory(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let out: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      out = a;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
    }),
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

function pads(layer: SVDConv2D): [number, number] {
  const p = layer.padding;
  if (p === 'valid') return [0, 0];
  if (typeof p === 'number') return [p, p];
  if (Array.isArray(p)) return [p[0], p[1]];
  throw new SvdTrainError('CONFIG_INVALID', `${layer.name}: padding '${String(p)}' cannot be exported; use a number (PyTorch-style) or 'valid'`);
}

const conv = (name: string, filters: number, kernelSize: number[], strides: number[], useBias: boolean): Record<string, unknown> => ({
  name,
  filters,
  kernelSize,
  strides,
  padding: 'valid',
  dataFormat: 'channelsLast',
  dilationRate: [1, 1],
  activation: 'linear',
  useBias,
  trainable: true,
});

/**
 * The same network in stock tfjs-layers classes only (inference semantics; see the module doc).
 * Layer names: an SVD layer N becomes `N_v` (first factor) and `N` (second factor, + bias), with
 * `N_pad*` ZeroPadding2D layers in front where it pads; the graph is otherwise unchanged.
 */
export function exportToStockLayers(model: tf.LayersModel): tf.LayersModel {
  const cfg = JSON.parse(JSON.stringify(model.getConfig())) as { name: string; layers: LayerEntry[] };
  const layers: LayerEntry[] = [];
  const weights = new Map<string, tf.Tensor[]>();
  const owned: tf.Tensor[] = [];
  try {
    for (const entry of cfg.layers) {
      const layer = model.getLayer(entry.name);
      const N = entry.name;
      let inbound = entry.inboundNodes;
      const push = (name: string, className: string, config: Record<string, unknown>): void => {
        layers.push({ name, className, config: { ...config, name }, inboundNodes: inbound });
        inbound = [[[name, 0, 0, {}]]];
      };
      if (layer instanceof SVDConv2D) {
        const { n, c, kh, kw } = layer.geometry();
        const r = layer.rank;
        const [ph, pw] = pads(layer);
        const [sh, sw] = layer.strides;
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
        owned.push(k1!, k2!);
        const bias = layer.bias ? [layer.bias.read()] : [];
        if (layer.decomposition === 'channel') {
          if (ph || pw) push(`${N}_pad`, 'ZeroPadding2D', { padding: [[ph, ph], [pw, pw]], dataFormat: 'channelsLast' });
          push(`${N}_v`, 'Conv2D', conv(`${N}_v`, r, [kh, kw], [sh, sw], false));
          push(N, 'Conv2D', conv(N, n, [1, 1], [1, 1], layer.useBias));
        } else {
          if (ph) push(`${N}_pad_h`, 'ZeroPadding2D', { padding: [[ph, ph], [0, 0]], dataFormat: 'channelsLast' });
          push(`${N}_v`, 'Conv2D', conv(`${N}_v`, r, [kh, 1], [sh, 1], false));
          if (pw) push(`${N}_pad_w`, 'ZeroPadding2D', { padding: [[0, 0], [pw, pw]], dataFormat: 'channelsLast' });
          push(N, 'Conv2D', conv(N, n, [1, kw], [1, sw], layer.useBias));
        }
        weights.set(`${N}_v`, [k1!]);
        weights.set(N, [k2!, ...bias]);
      } else if (layer instanceof SVDDense) {
        const [vs, ut] = tf.tidy(() => [tf.mul(layer.V.read(), layer.s.read()), tf.transpose(layer.U.read())]);
        owned.push(vs!, ut!);
        const dense = (name: string, units: number, useBias: boolean) => ({ name, units, useBias, activation: 'linear', trainable: true });
        push(`${N}_v`, 'Dense', dense(`${N}_v`, layer.rank, false));
        push(N, 'Dense', dense(N, layer.units, layer.useBias));
        weights.set(`${N}_v`, [vs!]);
        weights.set(N, [ut!, ...(layer.bias ? [layer.bias.read()] : [])]);
      } else if (layer instanceof SvdBatchNorm) {
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
      } else {
        layers.push(entry);
        // getWeights() returns the variables themselves (not copies): never dispose them.
        if (layer.weights.length > 0) weights.set(N, layer.getWeights());
      }
    }
    const fromConfig = (tf.LayersModel as unknown as { fromConfig: (cls: unknown, c: unknown) => tf.LayersModel }).fromConfig;
    const out = fromConfig(tf.LayersModel, { ...cfg, name: `${cfg.name}_stock`, layers });
    for (const [name, ws] of weights) out.getLayer(name).setWeights(ws);
    return out;
  } finally {
    tf.dispose(owned);
  }
}
