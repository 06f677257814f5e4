/**
 * SVDDense: a fully connected layer stored as its SVD factors (Yang et al. 2020), so that the
 * orthogonality and sparsity regularizers can act on U, V and s directly.
 *
 * Weights (in this order, named as PyTorch `state_dict` suffixes): `U` [out, r], `s` [r], `V` [in, r],
 * `bias` [out]. The PyTorch weight (out, in) is M = U · diag(s) · Vᵀ, so the forward is
 * y = x · V · diag(s) · Uᵀ + b. Like SVDConv2D it has two forms: merged (build the [in, out] kernel,
 * one matMul: in·out MACs per row plus in·out·r per batch) and factored (x·V first, then ·Uᵀ:
 * (in + out)·r per row). `auto` (the default) runs the cheaper one, so a full-rank fc costs what a
 * plain Dense costs and a pruned one less.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { matrixFromFactors, svdInit, type SvdFactors } from './svd-init.js';
import { chooseSvdForm } from './svd-form.js';
import { scalePermute } from './kernels/scale-permute.js';

/** Which forward an SVD layer runs: 'reconstruct' is the merged form. */
export type SvdForward = 'auto' | 'reconstruct' | 'factored';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;

/** Constructor arguments of `SVDDense`. */
export interface SVDDenseArgs extends LayerArgs {
  /** Output features. */
  units: number;
  /** Add a bias (default true). */
  useBias?: boolean;
  /** Rank r of the factors (default full: min(in, out)). */
  rank?: number;
  /** Seed of the He-normal draw that the SVD init factors (default: random). */
  seed?: number;
  /** Which form to run (default 'auto': the one with fewer MACs; 'reconstruct' is the merged kernel). */
  forward?: SvdForward;
}

/** Writes float32 factors into a layer's U, s, V variables after checking their shapes. */
export function writeFactors(
  layer: string,
  vars: { U: tf.LayerVariable; s: tf.LayerVariable; V: tf.LayerVariable },
  f: SvdFactors,
): void {
  const want = [vars.U.shape, vars.s.shape, vars.V.shape];
  const got = [[f.m, f.r], [f.r], [f.p, f.r]];
  if (want.some((w, i) => w.length !== got[i].length || w.some((d, j) => d !== got[i][j]))) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `${layer}: factors U [${got[0]}], s [${got[1]}], V [${got[2]}] do not fit the layer's ` +
        `U [${want[0]}], s [${want[1]}], V [${want[2]}]; build the layer with rank ${f.r}`,
    );
  }
  tf.tidy(() => {
    vars.U.write(tf.tensor2d(f.U, [f.m, f.r]));
    vars.s.write(tf.tensor1d(f.s));
    vars.V.write(tf.tensor2d(f.V, [f.p, f.r]));
  });
}

/** Reads a layer's factors back as plain arrays (the reference layout: they are the same matrices). */
export function readFactors(vars: { U: tf.LayerVariable; s: tf.LayerVariable; V: tf.LayerVariable }): SvdFactors {
  const [m, r] = vars.U.shape as [number, number];
  const p = vars.V.shape[0]!;
  return {
    U: Float32Array.from(vars.U.read().dataSync() as Float32Array),
    s: Float32Array.from(vars.s.read().dataSync() as Float32Array),
    V: Float32Array.from(vars.V.read().dataSync() as Float32Array),
    m,
    p,
    r,
  };
}

function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}

/**
 * Dense layer with SVD-factored weight. Input [batch, in] (or [..., in]); output [batch, units].
 */
export class SVDDense extends tf.layers.Layer {
  static className = 'SVDDense';

  readonly units: number;
  readonly useBias: boolean;
  /** Requested rank (undefined = full); `rank` holds the resolved value once built. */
  private readonly rankArg: number | undefined;
  readonly seed: number;
  readonly forward: SvdForward;
  rank = 0;
  inFeatures = 0;

  U!: tf.LayerVariable;
  s!: tf.LayerVariable;
  V!: tf.LayerVariable;
  bias: tf.LayerVariable | null = null;

  constructor(args: SVDDenseArgs) {
    super(args);
    if (!Number.isInteger(args.units) || args.units < 1) {
      throw new SvdTrainError('CONFIG_INVALID', `SVDDense units ${args.units}; expected a positive integer`);
    }
    this.units = args.units;
    this.useBias = args.useBias ?? true;
    this.rankArg = args.rank ?? undefined;
    this.seed = args.seed ?? randomSeed();
    this.forward = args.forward ?? 'auto';
    if (!['auto', 'reconstruct', 'factored'].includes(this.forward)) {
      throw new SvdTrainError('CONFIG_INVALID', `SVDDense forward '${String(this.forward)}'; expected 'auto', 'reconstruct' or 'factored'`);
    }
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const inF = shape[shape.length - 1];
    if (inF == null) throw new SvdTrainError('SHAPE_MISMATCH', `${this.name}: the last input dimension must be known`);
    this.inFeatures = inF;
    const g = { n: this.units, c: inF, kh: 1, kw: 1 };
    const full = Math.min(inF, this.units);
    const r = this.rankArg ?? full;
    const f = svdInit('dense', g, this.seed, r);
    this.rank = r;
    this.U = this.addWeight('U', [this.units, r], 'float32', tf.initializers.zeros());
    this.s = this.addWeight('s', [r], 'float32', tf.initializers.zeros());
    this.V = this.addWeight('V', [inF, r], 'float32', tf.initializers.zeros());
    if (this.useBias) this.bias = this.addWeight('bias', [this.units], 'float32', tf.initializers.zeros());
    writeFactors(this.name, this, f);
    this.built = true;
  }

  /** Replaces U, s, V (e.g. from `svdFromWeight`); shapes must match the built layer. */
  setFactors(f: SvdFactors): void {
    writeFactors(this.name, this, f);
  }

  /** U, s, V as plain arrays; identical to the PyTorch reference's `U`, `s`, `V`. */
  getFactors(): SvdFactors {
    return readFactors(this);
  }

  /** The PyTorch weight (out, in) = U·diag(s)·Vᵀ, row-major, computed in float64. */
  pytorchWeight(): Float32Array {
    return Float32Array.from(matrixFromFactors(this.getFactors()));
  }

  /** The tfjs dense kernel [in, units] = V · diag(s) · Uᵀ (the PyTorch weight transposed). */
  reconstructKernel(): tf.Tensor2D {
    return tf.tidy(() => {
      const V = this.V.read() as tf.Tensor2D;
      return tf.matMul(scalePermute<tf.Rank.R2>(V, this.s.read() as tf.Tensor1D, [...V.shape], [0, 1]), this.U.read(), false, true);
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    return [...shape.slice(0, -1), this.units];
  }

  /** MACs per input row of both forms, and of rebuilding the kernel (once per batch). */
  forwardCost(): { reconstruct: number; factored: number; rebuild: number } {
    const [i, o, r] = [this.inFeatures, this.units, this.rank];
    return { reconstruct: i * o, factored: (i + o) * r, rebuild: i * o * r };
  }

  /** Which form `call` runs for `rows` input rows (default Infinity: the kernel built once and reused). */
  forwardFor(rows = Infinity): 'reconstruct' | 'factored' {
    return this.forward === 'auto' ? chooseSvdForm(this.forwardCost(), rows) : this.forward;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const lead = x.shape.slice(0, -1);
      const x2 = x.rank === 2 ? (x as tf.Tensor2D) : tf.reshape<tf.Rank.R2>(x, [-1, this.inFeatures]);
      let y: tf.Tensor;
      if (this.forwardFor(x2.shape[0]) === 'reconstruct') {
        y = tf.matMul(x2, this.reconstructKernel());
      } else {
        // x·V (batch × r) first, then ·Uᵀ.
        const h = tf.mul(tf.matMul(x2, this.V.read()), this.s.read());
        y = tf.matMul(h, this.U.read(), false, true);
      }
      if (this.bias) y = tf.add(y, this.bias.read());
      return x.rank === 2 ? y : tf.reshape(y, [...lead, this.units]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      units: this.units,
      useBias: this.useBias,
      rank: this.rank || (this.rankArg ?? null),
      seed: this.seed,
      forward: this.forward,
    };
  }
}
tf.serialization.registerClass(SVDDense);
