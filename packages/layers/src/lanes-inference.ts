/**
 * Inference of a whole model in one native call: the lanes network (packages/native/src/lanes_net.h).
 *
 * Per op, a pruned ResNet-20 at a third of the MACs inferred only 1.6× as fast as full rank (issue
 * 11 asks 2.5×): each few-channel conv transposed its input into 16-image lanes and back, and each
 * 1×1 conv + batch-norm pass streamed a [256,32,32,16] activation (16.7 MB) through memory. Here
 * the model is compiled once into a list of convs and pools over numbered buffers, and the addon
 * runs it 16 images at a time with every activation in the lanes layout: no transposes between
 * layers, a group's activations reused from cache, and each conv's batch norm (eval-mode scale and
 * shift), shortcut and ReLU applied before its one store.
 *
 * The layers it takes: SVDConv2D (merged or factored, channel or spatial, in the form
 * `forwardFor` picks, the form `countMacs` counts), tfjs Conv2D (with ZeroPadding2D before it),
 * SVDBatchNorm right after either (folded into it; with its shortcut and ReLU), global average
 * pooling, and SVDDense or Dense after it. A graph with anything else, a layer called twice, or
 * another input shape than the model's is left to the per-op path (`fused-inference.ts`): this
 * returns null. Mathematically the same function as `model.apply(x, { training: false })`; the
 * float rounding differs (batch norm's scale is applied after the sum, not folded into weights).
 */
import * as tf from '@tensorflow/tfjs';
import { SVDBatchNorm } from './batch-norm.js';
import { LANES_NET } from './kernels/native.js';
import { modelGraph, type GraphNode } from './model-graph.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';

type Layer = tf.layers.Layer;

/** One conv of the program: shapes fixed at compile time, weights made at run time from the layers' variables. */
interface ConvStep {
  kind: 'conv';
  input: number;
  output: number;
  shortcut?: number;
  dims: { h: number; w: number; c: number; f: number; kh: number; kw: number; oh: number; ow: number; sh: number; sw: number; pt: number; pl: number };
  relu: boolean;
  /** The HWIO filter, and the per-channel scale and shift (undefined: 1 and 0). Called inside a tidy. */
  weights: () => { filter: tf.Tensor; scale?: tf.Tensor; shift?: tf.Tensor };
}

interface PoolStep {
  kind: 'pool';
  input: number;
  output: number;
  hw: number;
  c: number;
}

type ProgramStep = ConvStep | PoolStep;

/** A compiled model: its steps over value ids, each value's floats per image, and the buffer each value lives in. */
interface Program {
  steps: ProgramStep[];
  /** Floats per image of each buffer. */
  sizes: number[];
  /** Buffer of each value id. */
  buffer: Map<number, number>;
  input: number;
  output: number;
  /** Floats per image of the model's input and output. */
  inFloats: number;
  outFloats: number;
  /** The model's input [h, w, c] and output shape after the batch. */
  inShape: number[];
  outShape: number[];
}

const programs = new WeakMap<tf.LayersModel, Program | null>();

let enabled = true;

/** Turns the lanes network off (false: inference runs per op) or back on (the default), for benchmarks and tests. */
export function setLanesInference(on: boolean): void {
  enabled = on;
}

/** Whether the lanes network is on and the active backend has it (the native engine on a CPU with AVX-512F). */
export function lanesInferenceAvailable(): boolean {
  return enabled && tf.getKernel(LANES_NET, tf.getBackend()) != null;
}

/**
 * The model's eval-mode output for `x` [n, h, w, c] from one lanes-network call, or null where the
 * engine lacks it or the model is not one it takes (then take the per-op path). The caller owns
 * the result.
 */
export function lanesInference(model: tf.LayersModel, x: tf.Tensor): tf.Tensor | null {
  if (!lanesInferenceAvailable() || x.dtype !== 'float32' || x.rank !== 4) return null;
  let program = programs.get(model);
  if (program === undefined) {
    program = compile(model);
    programs.set(model, program);
  }
  if (!program || x.shape.slice(1).some((d, i) => d !== program.inShape[i])) return null;
  const p = program;
  const w = weightsOf(model, p);
  return tf.tidy(() => {
    const attrs = { steps: w.table, sizes: p.sizes, input: p.buffer.get(p.input)!, output: p.buffer.get(p.output)!, inFloats: p.inFloats, outFloats: p.outFloats, weights: w.arrays };
    const y = tf.engine().runKernel<tf.Tensor>(LANES_NET, { x }, attrs);
    return tf.reshape(y, [x.shape[0], ...p.outShape]);
  });
}

/** A program's step table and weights (filters with batch norm's scale and shift), as of `ids`. */
interface Weights {
  /** The dataId of each of the model's variables when these were made. */
  ids: unknown[];
  table: number[];
  arrays: Float32Array[];
}

const weightCache = new WeakMap<Program, Weights>();

/**
 * The step table and weights for the model's variables as they are now. Made once and reused while
 * no variable changes (a test-set evaluation calls this 40 times with the same weights; making them
 * is some 200 small tfjs ops). A variable's assign (setWeights, an optimizer step, batch norm's
 * running statistics) gives it a new dataId, so comparing those ids finds every change. Kept as JS
 * arrays, not tensors: the cache goes with the model, and nothing needs disposing.
 */
function weightsOf(model: tf.LayersModel, p: Program): Weights {
  const ids = model.weights.map((v) => v.read().dataId);
  const cached = weightCache.get(p);
  if (cached && cached.ids.length === ids.length && cached.ids.every((d, i) => d === ids[i])) return cached;
  const table: number[] = [];
  const arrays: Float32Array[] = [];
  tf.tidy(() => {
    const add = (t: tf.Tensor) => arrays.push(Float32Array.from(t.dataSync())) - 1;
    for (const s of p.steps) {
      const buf = (id: number) => p.buffer.get(id)!;
      if (s.kind === 'pool') {
        table.push(1, buf(s.input), buf(s.output), 0, s.hw, s.c, ...new Array<number>(14).fill(0));
        continue;
      }
      const { filter, scale, shift } = s.weights();
      const d = s.dims;
      table.push(
        0, buf(s.input), buf(s.output), s.shortcut === undefined ? 0 : buf(s.shortcut) + 1,
        d.h, d.w, d.c, d.f, d.kh, d.kw, d.oh, d.ow, d.sh, d.sw, d.pt, d.pl, s.relu ? 1 : 0,
        add(filter), scale ? add(scale) + 1 : 0, shift ? add(shift) + 1 : 0,
      );
    }
  });
  const made = { ids, table, arrays };
  weightCache.set(p, made);
  return made;
}

/** [h, w, c] of a 4D symbolic tensor, [1, 1, c] of a 2D one. */
function hwc(t: tf.SymbolicTensor): [number, number, number] | null {
  const s = t.shape;
  if (s.length === 4 && s.slice(1).every((d) => typeof d === 'number')) return s.slice(1) as [number, number, number];
  if (s.length === 2 && typeof s[1] === 'number') return [1, 1, s[1]];
  return null;
}

/** The program of `model`, or null where it has a layer or a wiring this does not take. */
function compile(model: tf.LayersModel): Program | null {
  const graph = modelGraph(model);
  const inShape = graph && hwc(model.inputs[0]);
  if (!graph || !inShape || model.inputs[0].shape.length !== 4) return null;
  const { nodes, readers } = graph;
  const outputId = model.outputs[0].id;

  // Values: id -> floats per image. Zero padding becomes an alias with extra padding for its conv.
  const size = new Map<number, number>([[model.inputs[0].id, inShape[0] * inShape[1] * inShape[2]]]);
  const padded = new Map<number, Pad>();
  const steps: ProgramStep[] = [];
  // Each conv node and the SVDBatchNorm that consumes it alone become one step (or two, factored).
  const folded = new Set<GraphNode>();
  let temp = -1;
  const newTemp = (floats: number) => {
    size.set(temp, floats);
    return temp--;
  };

  for (const node of nodes) {
    if (folded.has(node)) continue;
    const layer = node.layer;
    const out = node.output;
    const cls = layer.getClassName();
    if (cls === 'ZeroPadding2D') {
      const shape = hwc(node.inputs[0]);
      const o = hwc(out);
      const p = (layer as unknown as { padding: [[number, number], [number, number]] }).padding;
      if (!shape || !o || !Array.isArray(p) || readers.get(out.id) !== 1 || out.id === outputId) return null;
      const reader = nodes.find((n) => n.inputs.some((t) => t.id === out.id));
      if (!reader || reader.layer.getClassName() !== 'Conv2D') return null;
      padded.set(out.id, { src: node.inputs[0], top: p[0][0], bottom: p[0][1], left: p[1][0], right: p[1][1] });
      continue;
    }
    if (cls === 'GlobalAveragePooling2D') {
      const shape = hwc(node.inputs[0]);
      if (!shape || node.inputs[0].shape.length !== 4) return null;
      size.set(out.id, shape[2]);
      steps.push({ kind: 'pool', input: node.inputs[0].id, output: out.id, hw: shape[0] * shape[1], c: shape[2] });
      continue;
    }
    const conv = convOf(node.layer, node.inputs[0], padded.get(node.inputs[0].id));
    if (!conv) return null;
    // A batch norm reading this conv's output alone (as x) folds into it.
    let bn: SVDBatchNorm | undefined;
    let bnNode: GraphNode | undefined;
    const next = readers.get(out.id) === 1 && out.id !== outputId ? nodes.find((n) => n.inputs[0]?.id === out.id) : undefined;
    if (next && next.layer instanceof SVDBatchNorm && next.inputs.length <= 2) {
      bn = next.layer;
      bnNode = next;
      folded.add(next);
    }
    const final = bnNode ? bnNode.output : out;
    const shortcut = bnNode && bn!.residual ? bnNode.inputs[1]?.id : undefined;
    if (bn?.residual && shortcut === undefined) return null;
    const relu = bn?.activation === 'relu';
    const affine = (): { scale?: tf.Tensor; shift?: tf.Tensor } => {
      const bias = conv.bias?.();
      if (!bn) return { shift: bias };
      const { scale, shift } = bn.inferenceAffine();
      return { scale, shift: bias ? tf.add(shift, tf.mul(scale, bias)) : shift };
    };
    const src = conv.input;
    const last = conv.parts.length - 1;
    let value = src.id;
    conv.parts.forEach((part, i) => {
      const isLast = i === last;
      const output = isLast ? final.id : newTemp(part.dims.oh * part.dims.ow * part.dims.f);
      if (isLast) size.set(final.id, part.dims.oh * part.dims.ow * part.dims.f);
      steps.push({
        kind: 'conv',
        input: value,
        output,
        shortcut: isLast ? shortcut : undefined,
        dims: part.dims,
        relu: isLast && relu,
        weights: isLast ? () => ({ filter: part.filter(), ...affine() }) : () => ({ filter: part.filter() }),
      });
      value = output;
    });
  }
  if (!size.has(outputId)) return null;
  pairUp(steps);
  const outShape = model.outputs[0].shape.slice(1);
  if (!outShape.every((d) => typeof d === 'number') || outShape.reduce((a, b) => a * b, 1) !== size.get(outputId)) return null;
  return allocate(steps, size, model.inputs[0].id, outputId, inShape, outShape);
}

/**
 * Moves the conv that reads a 1×1 conv's output (stride 1, no shortcut) up to just after it, where
 * what it reads is made by then: the addon runs two adjacent such steps row by row
 * (lanes_net.cc RunPair). In a downsampling block the shortcut's convs were compiled between the
 * block's two layers.
 */
function pairUp(steps: ProgramStep[]): void {
  const madeAt = (id: number, before: number) => steps.findIndex((st, k) => k < before && st.output === id);
  for (let i = 0; i + 1 < steps.length; i++) {
    const a = steps[i];
    if (a.kind !== 'conv' || a.shortcut !== undefined || a.dims.kh !== 1 || a.dims.kw !== 1 || a.dims.sh !== 1 || a.dims.sw !== 1) continue;
    if (steps[i + 1].input === a.output) continue;
    const j = steps.findIndex((st, k) => k > i + 1 && st.input === a.output);
    if (j < 0) continue;
    const b = steps[j];
    // Each value is made by one step, so only b's shortcut, if any, must be made by then.
    if (b.kind === 'conv' && b.shortcut !== undefined && madeAt(b.shortcut, i + 1) < 0) continue;
    steps.splice(j, 1);
    steps.splice(i + 1, 0, b);
  }
}

/** A ZeroPadding2D's output: its input with zero rows and columns around it, for the conv that reads it. */
interface Pad {
  src: tf.SymbolicTensor;
  top: number;
  bottom: number;
  left: number;
  right: number;
}

interface ConvPart {
  dims: ConvStep['dims'];
  /** Its HWIO filter, flattened. */
  filter: () => tf.Tensor;
}

/**
 * A conv-like layer as one or two convs: SVDConv2D in the form it runs, tfjs Conv2D (after an
 * optional zero padding), SVDDense or Dense (a 1×1 conv on one pixel). Null for anything else.
 */
function convOf(layer: Layer, x: tf.SymbolicTensor, pad?: Pad): { input: tf.SymbolicTensor; parts: ConvPart[]; bias?: () => tf.Tensor } | null {
  const shape = hwc(pad ? pad.src : x);
  if (!shape) return null;
  const [h, w, c] = shape;
  if (layer instanceof SVDConv2D) {
    if (pad || x.shape.length !== 4) return null;
    const [kh, kw] = layer.kernelSize;
    const [sh, sw] = layer.strides;
    const [oh, ow] = layer.outputSize(h, w);
    const [pt, , pl] = layer.explicitPadding(h, w);
    const { n } = layer.geometry();
    const r = layer.rank;
    const bias = layer.bias ? () => layer.bias!.read() : undefined;
    if (layer.forwardFor(h, w) === 'reconstruct') {
      return { input: x, bias, parts: [{ dims: { h, w, c, f: n, kh, kw, oh, ow, sh, sw, pt, pl }, filter: () => layer.reconstructWeight() }] };
    }
    if (layer.decomposition === 'channel') {
      return {
        input: x,
        bias,
        parts: [
          { dims: { h, w, c, f: r, kh, kw, oh, ow, sh, sw, pt, pl }, filter: () => layer.rankFilter() },
          { dims: { h: oh, w: ow, c: r, f: n, kh: 1, kw: 1, oh, ow, sh: 1, sw: 1, pt: 0, pl: 0 }, filter: () => layer.pointwiseMatrix() },
        ],
      };
    }
    // Spatial: the kh×1 conv down the height (stride and padding along it), then 1×kw along the width.
    return {
      input: x,
      bias,
      parts: [
        { dims: { h, w, c, f: r, kh, kw: 1, oh, ow: w, sh, sw: 1, pt, pl: 0 }, filter: () => layer.columnFilter() },
        { dims: { h: oh, w, c: r, f: n, kh: 1, kw, oh, ow, sh: 1, sw, pt: 0, pl }, filter: () => layer.rowFilter() },
      ],
    };
  }
  if (layer instanceof SVDDense) {
    if (pad || x.shape.length !== 2) return null;
    const f = layer.units;
    const bias = layer.bias ? () => layer.bias!.read() : undefined;
    const one = (cin: number, cout: number, filter: () => tf.Tensor): ConvPart => ({ dims: { h: 1, w: 1, c: cin, f: cout, kh: 1, kw: 1, oh: 1, ow: 1, sh: 1, sw: 1, pt: 0, pl: 0 }, filter });
    if (layer.forwardFor() === 'reconstruct') return { input: x, bias, parts: [one(c, f, () => layer.reconstructKernel())] };
    const r = layer.rank;
    return { input: x, bias, parts: [one(c, r, () => tf.mul(layer.V.read(), layer.s.read())), one(r, f, () => tf.transpose(layer.U.read()))] };
  }
  const cls = layer.getClassName();
  const cfg = layer.getConfig() as Record<string, unknown>;
  const linear = cfg.activation === undefined || cfg.activation === 'linear';
  const kernel = (layer as unknown as { kernel?: tf.LayerVariable }).kernel;
  const biasVar = (layer as unknown as { bias?: tf.LayerVariable | null }).bias;
  const bias = biasVar ? () => biasVar.read() : undefined;
  if (!kernel || !linear) return null;
  if (cls === 'Dense') {
    if (pad || x.shape.length !== 2) return null;
    const f = cfg.units as number;
    return { input: x, bias, parts: [{ dims: { h: 1, w: 1, c, f, kh: 1, kw: 1, oh: 1, ow: 1, sh: 1, sw: 1, pt: 0, pl: 0 }, filter: () => kernel.read() }] };
  }
  if (cls === 'Conv2D') {
    const [kh, kw] = cfg.kernelSize as [number, number];
    const [sh, sw] = cfg.strides as [number, number];
    const dil = cfg.dilationRate as number | [number, number];
    if ((Array.isArray(dil) ? dil : [dil, dil]).some((d) => d !== 1) || cfg.dataFormat === 'channelsFirst') return null;
    const f = cfg.filters as number;
    // tfjs' own padding rule for 'same' / 'valid', on the zero-padded input where there is one.
    const geo = tf.backend_util.computeConv2DInfo([1, h + (pad ? pad.top + pad.bottom : 0), w + (pad ? pad.left + pad.right : 0), c], [kh, kw, c, f], [sh, sw], 1, cfg.padding as 'same' | 'valid');
    const out = hwc(layer.inboundNodes[0].outputTensors[0]);
    if (!out || out[0] !== geo.outHeight || out[1] !== geo.outWidth) return null;
    const [oh, ow] = [geo.outHeight, geo.outWidth];
    return {
      input: pad ? pad.src : x,
      bias,
      parts: [{ dims: { h, w, c, f, kh, kw, oh, ow, sh, sw, pt: geo.padInfo.top + (pad?.top ?? 0), pl: geo.padInfo.left + (pad?.left ?? 0) }, filter: () => kernel.read() }],
    };
  }
  return null;
}

/**
 * Buffers for the values: each value gets a buffer when its step writes it and gives it back after
 * its last reader, so a ResNet-20's ~45 values share a handful of buffers and stay in cache. A step's
 * output never shares a buffer with its input (the inputs are freed only after it), nor with the
 * previous step's; it may take its shortcut's, below.
 */
function allocate(steps: ProgramStep[], size: Map<number, number>, input: number, output: number, inShape: number[], outShape: number[]): Program {
  const left = new Map<number, number>();
  const reads = (s: ProgramStep) => (s.kind === 'conv' && s.shortcut !== undefined ? [s.input, s.shortcut] : [s.input]);
  for (const s of steps) for (const id of reads(s)) left.set(id, (left.get(id) ?? 0) + 1);
  const sizes: number[] = [];
  const free: number[] = [];
  const buffer = new Map<number, number>();
  const take = (floats: number) => {
    // Best fit among the free buffers, growing one if none is large enough.
    let best = -1;
    for (const [i, b] of free.entries()) if (best < 0 || Math.abs(sizes[b] - floats) < Math.abs(sizes[free[best]] - floats)) best = i;
    if (best < 0) {
      sizes.push(floats);
      return sizes.length - 1;
    }
    const b = free.splice(best, 1)[0];
    sizes[b] = Math.max(sizes[b], floats);
    return b;
  };
  buffer.set(input, take(size.get(input)!));
  // Buffers a step frees go back for reuse only after the next step has its output: that output
  // never lands where the previous step's input was, so the addon may run the two steps row by row
  // together (a 1×1 conv and the conv after it, lanes_net.cc RunPair), which needs that input intact.
  let freedBefore: number[] = [];
  for (const s of steps) {
    // A shortcut read last here is overwritten in place: each output value is written right after
    // the shortcut value at its own position is read, and nothing else reads it afterwards. The
    // block's output then lands where its input was, in cache, not in a fresh buffer.
    const sc = s.kind === 'conv' ? s.shortcut : undefined;
    const inPlace = sc !== undefined && sc !== input && left.get(sc) === 1 && sizes[buffer.get(sc)!] >= size.get(s.output)!;
    buffer.set(s.output, inPlace ? buffer.get(sc)! : take(size.get(s.output)!));
    free.push(...freedBefore);
    freedBefore = [];
    for (const id of reads(s)) {
      const n = left.get(id)! - 1;
      left.set(id, n);
      // The input's buffer is never reused: the output must not land in it (the addon refuses that).
      if (n === 0 && id !== output && id !== input && !(inPlace && id === sc)) freedBefore.push(buffer.get(id)!);
    }
  }
  return { steps, sizes, buffer, input, output, inFloats: size.get(input)!, outFloats: size.get(output)!, inShape, outShape };
}
