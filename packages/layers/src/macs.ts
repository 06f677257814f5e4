/**
 * Multiply-accumulate (MAC) and parameter counts of a model, per layer, for the pruning report,
 * the CLI and the HTML report. One MAC is one multiply and one add; where FLOPs are shown they are
 * 2·MACs. Only convolutions and dense layers are counted (BN, ReLU, pooling and additions are
 * O(activations) and negligible next to them).
 *
 * SVD layers are counted in the form they actually run (`forwardFor`, the same choice the layer
 * makes in `call`), for a batch of `batch` images: the merged form pays rebuilding its filter
 * (m·p·r MACs) once per batch, so per image it adds m·p·r / batch. The default batch is Infinity:
 * the filter built once and reused, which is what the stock export runs and what a large batch
 * approaches. A full-rank SVD layer then costs exactly its plain counterpart.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';

/** The form a counted layer computes in: a plain layer, or an SVD layer merged or factored. */
export type ComputeForm = 'plain' | 'merged' | 'factored';

export interface LayerMacs {
  /** tfjs layer name. */
  name: string;
  /** MACs for one input image, in the form that runs. */
  macs: number;
  /** Parameters the layer stores (trainable and not; for SVD layers U, s, V and bias). */
  params: number;
  /** Weights of the form that runs, as the stock export stores them (merged: m·p; factored: (m + p)·r; + bias). */
  exportParams: number;
  form: ComputeForm;
}

export interface CountMacsOptions {
  /** Input [H, W, C] of one image (default: the model's own input shape, which it must equal). */
  inputShape?: readonly number[];
  /** Images per batch over which the merged form's filter rebuild is shared (default Infinity). */
  batch?: number;
}

function sizeOf(shape: readonly (number | null)[]): number {
  return shape.reduce<number>((a, b) => a * (b ?? 1), 1);
}

/** Number of weights in a model (or one layer), trainable and non-trainable (BN running stats). */
export function countParams(model: tf.LayersModel | tf.layers.Layer): number {
  return model.weights.reduce((a, w) => a + sizeOf(w.shape), 0);
}

function firstShape(s: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(s[0]) ? s[0] : s) as tf.Shape;
}

/** MACs, export weights and form of one layer for one image, given its (batched) input and output shapes. */
function layerCost(layer: tf.layers.Layer, inShape: tf.Shape, outShape: tf.Shape, batch: number): Omit<LayerMacs, 'name' | 'params'> {
  const perBatch = (x: number) => (Number.isFinite(batch) ? x / Math.max(batch, 1) : 0);
  if (layer instanceof SVDConv2D) {
    const [, h, w] = inShape as number[];
    const cost = layer.forwardCost(h, w);
    const { n, c, kh, kw } = layer.geometry();
    const bias = layer.useBias ? n : 0;
    const r = layer.rank;
    if (layer.forwardFor(h, w, batch) === 'reconstruct') {
      return { macs: cost.reconstruct + perBatch(cost.rebuild), exportParams: n * c * kh * kw + bias, form: 'merged' };
    }
    // Factored stores (V·s)ᵀ as the first conv and U as the second: (m + p)·r weights.
    return { macs: cost.factored, exportParams: (layer.U.shape[0]! + layer.V.shape[0]!) * r + bias, form: 'factored' };
  }
  if (layer instanceof SVDDense) {
    const positions = sizeOf(inShape.slice(1, -1));
    const cost = layer.forwardCost();
    const bias = layer.useBias ? layer.units : 0;
    if (layer.forwardFor(batch * positions) === 'reconstruct') {
      return { macs: positions * cost.reconstruct + perBatch(cost.rebuild), exportParams: layer.inFeatures * layer.units + bias, form: 'merged' };
    }
    return { macs: positions * cost.factored, exportParams: (layer.inFeatures + layer.units) * layer.rank + bias, form: 'factored' };
  }
  const cls = layer.getClassName();
  const exportParams = countParams(layer);
  if (cls === 'Conv2D') {
    const kernel = layer.getWeights()[0]; // [kh, kw, cin, cout]
    const [kh, kw, cin, cout] = kernel.shape as number[];
    const [, oh, ow] = outShape as number[];
    return { macs: oh * ow * kh * kw * cin * cout, exportParams, form: 'plain' };
  }
  if (cls === 'Dense') {
    const [cin, cout] = layer.getWeights()[0].shape as number[];
    const positions = sizeOf(inShape.slice(1, -1));
    return { macs: positions * cin * cout, exportParams, form: 'plain' };
  }
  return { macs: 0, exportParams, form: 'plain' };
}

/**
 * What one unit of rank costs in each SVD layer: its factored form's MACs per image over its rank
 * (factored MACs grow linearly with the rank), by tfjs layer name, in the model's layer order. A
 * stage-1 3×3 conv of ResNet-20 (16 channels at 32×32) pays 163,840 MACs per singular value, a
 * stage-3 one (64 channels at 8×8) 40,960: the same rank costs 4× more in the first.
 */
export function macsPerRank(model: tf.LayersModel): Map<string, number> {
  const out = new Map<string, number>();
  for (const layer of model.layers) {
    if (!(layer instanceof SVDConv2D || layer instanceof SVDDense)) continue;
    const node = layer.inboundNodes[0];
    if (!node) throw new SvdTrainError('SHAPE_MISMATCH', `layer '${layer.name}' was never applied to an input`);
    const inShape = firstShape(node.inputShapes);
    const factored = layer instanceof SVDConv2D ? layer.forwardCost(inShape[1]!, inShape[2]!).factored : sizeOf(inShape.slice(1, -1)) * layer.forwardCost().factored;
    out.set(layer.name, factored / layer.rank);
  }
  return out;
}

/**
 * Per-layer MACs for one image of `inputShape`, in the form each layer runs. Layers without
 * weights are left out of `perLayer`.
 * @throws SvdTrainError SHAPE_MISMATCH when `inputShape` differs from the model's fixed input.
 */
export function countMacs(model: tf.LayersModel, opts: CountMacsOptions = {}): { total: number; params: number; exportParams: number; perLayer: LayerMacs[] } {
  const own = firstShape(model.inputs[0].shape).slice(1);
  const { inputShape } = opts;
  const batch = opts.batch ?? Infinity;
  if (!(batch >= 1)) throw new SvdTrainError('CONFIG_INVALID', `countMacs batch ${batch}; expected a number ≥ 1 (or Infinity for a filter built once)`);
  if (inputShape && (inputShape.length !== own.length || inputShape.some((d, i) => own[i] != null && own[i] !== d))) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `countMacs input [${inputShape.join(',')}] does not match the model input [${own.join(',')}]; build the model with that inputShape`,
    );
  }
  const perLayer: LayerMacs[] = [];
  let total = 0;
  let exportParams = 0;
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    // Layer has no public input-shape getter; its first inbound node records the shapes it was called on.
    const node = layer.inboundNodes[0];
    if (!node) throw new SvdTrainError('SHAPE_MISMATCH', `layer '${layer.name}' was never applied to an input`);
    const c = layerCost(layer, firstShape(node.inputShapes), firstShape(node.outputShapes), batch);
    perLayer.push({ name: layer.name, ...c, params: countParams(layer) });
    total += c.macs;
    exportParams += c.exportParams;
  }
  return { total, params: countParams(model), exportParams, perLayer };
}
