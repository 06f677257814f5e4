/**
 * PyTorch `state_dict` names for the weights of our tfjs models, in `named_parameters()` order.
 *
 * Why: the coordinator, checkpoints and the PyTorch reference all speak PyTorch names
 * (`layers.3.shortcut.0.U`), but tfjs layer names cannot contain '.', so a layer is named with '_'
 * for '.' (`layers_3_shortcut_0`) and the mapping back is done here. The order is derived from the
 * names (module registration order of the reference CifarResNet: stem, blocks in index order with
 * conv1, bn1, conv2, bn2, shortcut.0, shortcut.1, then fc), not from `model.layers`, whose
 * topological order is not the registration order. So it also works for models that were
 * loaded from JSON, pruned or rebuilt. Modules outside that scheme (a custom tf.sequential or
 * tf.model with its own layer names) come after it, each layer's weights together, in
 * `model.layers` order: the one order such a model has, the same in every process that builds or
 * loads it.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type WireTensor } from '@svd-train/core';

export interface NamedVariable {
  /** PyTorch state_dict name, e.g. 'layers.3.shortcut.0.U'. */
  name: string;
  variable: tf.LayerVariable;
}

/** tfjs layer name for a PyTorch module name ('layers.3.conv1' → 'layers_3_conv1'). */
export function layerNameFor(moduleName: string): string {
  return moduleName.replace(/\./g, '_');
}

/** PyTorch module name for one of our tfjs layer names ('layers_3_conv1' → 'layers.3.conv1'). */
export function moduleNameFor(layerName: string): string {
  return layerName.replace(/_/g, '.');
}

/** Weight suffix (after the layer prefix) → PyTorch parameter name and whether it is a buffer. */
const WEIGHT_MAP: Record<string, { torch: string; buffer: boolean; rank: number }> = {
  U: { torch: 'U', buffer: false, rank: 0 },
  s: { torch: 's', buffer: false, rank: 1 },
  V: { torch: 'V', buffer: false, rank: 2 },
  kernel: { torch: 'weight', buffer: false, rank: 0 },
  gamma: { torch: 'weight', buffer: false, rank: 0 },
  beta: { torch: 'bias', buffer: false, rank: 3 },
  bias: { torch: 'bias', buffer: false, rank: 3 },
  movingMean: { torch: 'running_mean', buffer: true, rank: 0 },
  moving_mean: { torch: 'running_mean', buffer: true, rank: 0 },
  movingVariance: { torch: 'running_var', buffer: true, rank: 1 },
  moving_variance: { torch: 'running_var', buffer: true, rank: 1 },
};

const BLOCK_PARTS = ['conv1', 'bn1', 'conv2', 'bn2', 'shortcut.0', 'shortcut.1'];

/**
 * Sort key of a module: PyTorch registration order for the ResNets' module names; a module that
 * is not one of them sorts by `layerIndex` (its index in `model.layers`) after them (or after the
 * known parts of its block), so its weights stay together instead of interleaving with another
 * unrecognised module's.
 */
function moduleKey(mod: string, layerIndex: number): number[] {
  if (mod.startsWith('stem.')) return [0, Number(mod.slice(5)) || 0];
  const m = /^layers\.(\d+)\.(.+)$/.exec(mod);
  if (m) {
    const part = BLOCK_PARTS.indexOf(m[2]);
    return part < 0 ? [1, Number(m[1]), BLOCK_PARTS.length, layerIndex] : [1, Number(m[1]), part];
  }
  if (mod === 'fc') return [2];
  return [3, layerIndex];
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? -1) - (b[i] ?? -1);
    if (d !== 0) return d;
  }
  return 0;
}

function suffixOf(v: tf.LayerVariable): string {
  const parts = v.originalName.split('/');
  return parts[parts.length - 1];
}

function collect(model: tf.LayersModel, buffers: boolean): NamedVariable[] {
  const out: { name: string; variable: tf.LayerVariable; key: number[] }[] = [];
  for (const [layerIndex, layer] of model.layers.entries()) {
    if (layer.weights.length === 0) continue;
    const mod = moduleNameFor(layer.name);
    for (const v of layer.weights) {
      const suffix = suffixOf(v);
      const info = WEIGHT_MAP[suffix];
      if (!info) {
        throw new SvdTrainError(
          'SHAPE_MISMATCH',
          `layer '${layer.name}' has weight '${v.originalName}' with no PyTorch name; expected one of ${Object.keys(WEIGHT_MAP).join(', ')}`,
        );
      }
      if (info.buffer !== buffers) continue;
      out.push({ name: `${mod}.${info.torch}`, variable: v, key: [...moduleKey(mod, layerIndex), 100 + info.rank] });
    }
  }
  // Stable sort: modules in registration order, parameters in their in-module order.
  out.sort((a, b) => compareKeys(a.key, b.key));
  return out.map(({ name, variable }) => ({ name, variable }));
}

/** Trainable parameters with PyTorch names, in `named_parameters()` order. */
export function namedParameters(model: tf.LayersModel): NamedVariable[] {
  return collect(model, false);
}

/** BN running statistics (`….running_mean`, `….running_var`), in `named_buffers()` order. */
export function namedBuffers(model: tf.LayersModel): NamedVariable[] {
  return collect(model, true);
}

function read(list: NamedVariable[]): WireTensor[] {
  return list.map(({ name, variable }) => ({
    name,
    shape: [...variable.shape] as number[],
    data: Float32Array.from(variable.read().dataSync() as Float32Array),
  }));
}

function write(list: NamedVariable[], tensors: readonly WireTensor[], what: string): void {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  if (byName.size !== list.length || tensors.length !== list.length) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `got ${tensors.length} ${what} tensors, expected ${list.length} (${list.map((l) => l.name).join(', ')})`,
    );
  }
  for (const { name, variable } of list) {
    const t = byName.get(name);
    if (!t) throw new SvdTrainError('SHAPE_MISMATCH', `${what} '${name}' is missing; the model needs it`);
    const shape = variable.shape as number[];
    const n = shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new SvdTrainError(
        'SHAPE_MISMATCH',
        `${what} '${name}' has shape [${t.shape.join(',')}] (${t.data.length} values), expected [${shape.join(',')}]`,
      );
    }
  }
  for (const { name, variable } of list) {
    const t = byName.get(name)!;
    const value = tf.tensor(t.data, t.shape, 'float32');
    variable.write(value);
    // assign() shares the buffer by reference count, so the temporary can go.
    value.dispose();
  }
}

/** All trainable parameters as WireTensors (tfjs layouts), in `namedParameters` order. */
export function getParameters(model: tf.LayersModel): WireTensor[] {
  return read(namedParameters(model));
}

/** Writes parameters by name; the set of names and every shape must match exactly. */
export function setParameters(model: tf.LayersModel, tensors: readonly WireTensor[]): void {
  write(namedParameters(model), tensors, 'parameter');
}

/** BN running statistics as WireTensors, in `namedBuffers` order. */
export function getBuffers(model: tf.LayersModel): WireTensor[] {
  return read(namedBuffers(model));
}

/** Writes BN running statistics by name. */
export function setBuffers(model: tf.LayersModel, tensors: readonly WireTensor[]): void {
  write(namedBuffers(model), tensors, 'buffer');
}

/**
 * Writes a model's weights as a checkpoint or a message carries them: the parameters, then the BN
 * running statistics when there are any (a plain model without batch norm, or a sender that keeps
 * the model's own statistics, sends none).
 */
export function setWeights(model: tf.LayersModel, weights: { readonly params: readonly WireTensor[]; readonly buffers: readonly WireTensor[] }): void {
  setParameters(model, weights.params);
  if (weights.buffers.length) setBuffers(model, weights.buffers);
}

/**
 * PyTorch names of the parameters that get no weight decay: batch-norm gammas and betas (their
 * names, `layers.0.bn1.weight`, look like conv weights, so only the model can tell) and every bias.
 * Passed to the optimizer as `noDecay`. BN layers are recognised by class name, so this also works
 * for stock `BatchNormalization` layers and for models loaded from JSON.
 */
export function noDecayParameterNames(model: tf.LayersModel): string[] {
  const bnVars = new Set(
    model.layers
      .filter((l) => ['SVDBatchNorm', 'BatchNormalization'].includes(l.getClassName()))
      .flatMap((l) => l.trainableWeights.map((w) => w.name)),
  );
  return namedParameters(model)
    .filter((p) => bnVars.has(p.variable.name) || p.name.endsWith('.bias'))
    .map((p) => p.name);
}
