import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import {
  TOL,
  loadReference,
  refToTensor,
  expectClose,
  gradCheck,
  expectNoLeakedTensors,
  forEachBackend,
  TEST_ENGINES,
  type RefTensor,
} from './test-support/index.js';
import { orthogonalityPenalty } from './orthogonality.js';
import { l1, hoyer, hoyerSquare, sparsityPenalty } from './sparsity.js';
import { svdLayers, svdRegularization } from './svd-regularization.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';

interface RegRef {
  value: number;
  grads: { dU: RefTensor; ds: RefTensor; dV: RefTensor };
}
interface Case {
  name: string;
  U: RefTensor;
  s: RefTensor;
  V: RefTensor;
  regularizers: { orth: RegRef; hoyer: RegRef; l1: RegRef };
}

const cases = loadReference<Case[]>('layers');

function scalarClose(label: string, got: number, want: number, tol: number): void {
  const rel = Math.abs(got - want) / Math.abs(want);
  if (!(rel <= tol)) throw new Error(`${label}: ${got} vs expected ${want}, rel err ${rel.toExponential(3)} > ${tol}`);
}

forEachBackend(TEST_ENGINES, (backend) => {
  describe('regularizers golden vs PyTorch reference (layers.json)', () => {
    for (const c of cases) {
      const shapes = `U=[${c.U.shape}] s=[${c.s.shape}] V=[${c.V.shape}] (${c.name})`;
      const fns = {
        orth: (U: tf.Tensor, _s: tf.Tensor, V: tf.Tensor) => orthogonalityPenalty(U, V),
        hoyer: (_U: tf.Tensor, s: tf.Tensor) => hoyer(s),
        l1: (_U: tf.Tensor, s: tf.Tensor) => l1(s),
      } as const;
      for (const kind of ['orth', 'hoyer', 'l1'] as const) {
        it(`${kind} ${shapes}: value and dU, ds, dV`, () => {
          const ref = c.regularizers[kind];
          const [U, s, V] = [refToTensor(c.U), refToTensor(c.s), refToTensor(c.V)];
          const f = fns[kind] as (U: tf.Tensor, s: tf.Tensor, V: tf.Tensor) => tf.Scalar;
          const { value, grads } = tf.tidy(() => {
            const v = f(U, s, V);
            // Add 0·(U, s, V) terms so every input is connected and gets a (zero) gradient.
            const g = tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
              tf.addN([f(a, b, d), tf.mul(0, tf.sum(a)), tf.mul(0, tf.sum(b)), tf.mul(0, tf.sum(d))]),
            )([U, s, V]);
            return { value: v.dataSync()[0]!, grads: g.map((t) => t.dataSync()) };
          });
          const tag = `${backend}/${c.name}/${kind}`;
          scalarClose(`${tag} value`, value, ref.value, TOL.scalarRel);
          expectClose(`${tag} dU`, grads[0]!, ref.grads.dU, TOL.tensorRel);
          expectClose(`${tag} ds`, grads[1]!, ref.grads.ds, TOL.tensorRel);
          expectClose(`${tag} dV`, grads[2]!, ref.grads.dV, TOL.tensorRel);
          tf.dispose([U, s, V]);
        });
      }
    }
  });

  describe('svdRegularization over a model', () => {
    it('sums every SVD layer, recursing into a nested model; total = λo·orth + λs·sparsity; no leaks', async () => {
      const inner = tf.sequential({
        layers: [new SVDConv2D({ inputShape: [6, 6, 2], filters: 3, kernelSize: 3, padding: 1, decomposition: 'spatial', seed: 1 })],
      });
      const input = tf.input({ shape: [6, 6, 2] });
      let h = inner.apply(input) as tf.SymbolicTensor;
      h = new SVDConv2D({ filters: 4, kernelSize: 1, strides: 2, seed: 2 }).apply(h) as tf.SymbolicTensor;
      h = tf.layers.flatten().apply(h) as tf.SymbolicTensor;
      h = new SVDDense({ units: 5, seed: 3 }).apply(h) as tf.SymbolicTensor;
      const model = tf.model({ inputs: input, outputs: h });
      const layers = svdLayers(model);
      expect(layers.map((l) => l.getClassName())).toEqual(['SVDConv2D', 'SVDConv2D', 'SVDDense']);
      // Perturb U so the orth term is not ~0.
      for (const l of layers) {
        tf.tidy(() => {
          l.U.write(tf.add(l.U.read(), tf.randomNormal(l.U.shape as number[], 0, 0.1, 'float32', 4)));
        });
      }
      for (const kind of ['hoyer', 'l1', 'hoyer2', 'none'] as const) {
        const opts = { lambdaO: 0.7, lambdaS: 0.07, sparsity: kind };
        const expected = tf.tidy(() => {
          let o = 0;
          let sp = 0;
          for (const l of layers) {
            o += orthogonalityPenalty(l.U.read(), l.V.read()).dataSync()[0]!;
            sp += sparsityPenalty(kind, l.s.read()).dataSync()[0]!;
          }
          return { o, sp };
        });
        const r = await expectNoLeakedTensors(() => {
          const res = svdRegularization(model, opts);
          const out = { total: res.total.dataSync()[0]!, orth: res.orth.dataSync()[0]!, sparsity: res.sparsity.dataSync()[0]! };
          tf.dispose([res.total, res.orth, res.sparsity]);
          return out;
        }, `svdRegularization ${kind}`);
        scalarClose(`${kind} orth`, r.orth, expected.o, 1e-6);
        if (kind === 'none') expect(r.sparsity).toBe(0);
        else scalarClose(`${kind} sparsity`, r.sparsity, expected.sp, 1e-6);
        expect(Math.abs(r.total - (0.7 * r.orth + 0.07 * r.sparsity))).toBeLessThanOrEqual(1e-6 * Math.abs(r.total));
      }
      // Usable inside variableGrads: every U, s, V gets a gradient, without leaks.
      await expectNoLeakedTensors(() => {
        const { value, grads } = tf.variableGrads(() => svdRegularization(model, { lambdaO: 1, lambdaS: 0.07, sparsity: 'hoyer' }).total);
        for (const l of layers) for (const v of [l.U, l.s, l.V]) expect(grads[(v.read() as tf.Variable).name]).toBeDefined();
        tf.dispose([value, ...Object.values(grads)]);
      }, 'variableGrads(svdRegularization)');
      model.dispose();
    });
  });
});

describe('regularizers: central-difference gradient checks and hand values (cpu)', () => {
  const U = () => tf.tensor2d([0.9, 0.2, -0.3, 0.1, 0.8, 0.4, 0.2, -0.1, 0.7, 0.3, 0.1, -0.5], [4, 3]);
  const V = () => tf.tensor2d([0.6, -0.4, 0.2, 0.3, 0.9, 0.1, -0.2, 0.2, 1.1], [3, 3]);
  const s = () => tf.tensor1d([2.0, -0.7, 0.4]);

  it('orthogonalityPenalty U=[4,3] V=[3,3]: d/dU, d/dV', async () => {
    await tf.setBackend('cpu');
    const [u, v] = [U(), V()];
    gradCheck((a, b) => orthogonalityPenalty(a!, b!), [u, v], { label: 'orth' });
    tf.dispose([u, v]);
  });

  for (const [name, fn] of [
    ['l1', l1],
    ['hoyer', hoyer],
    ['hoyerSquare', hoyerSquare],
  ] as const) {
    it(`${name} s=[3] (one negative entry): d/ds`, async () => {
      await tf.setBackend('cpu');
      const t = s();
      // eps 1e-3 keeps every perturbed entry on the same side of 0 (|s| kink).
      gradCheck((a) => fn(a!), [t], { label: name, eps: 1e-3 });
      t.dispose();
    });
  }

  it('hand values for s=[2,-0.7,0.4]: l1 3.1, hoyer 3.1/√4.65, hoyerSquare 3.1²/4.65', async () => {
    await tf.setBackend('cpu');
    const t = s();
    const n2 = 4 + 0.49 + 0.16;
    const got = await expectNoLeakedTensors(() => {
      const vals = [l1(t), hoyer(t), hoyerSquare(t)];
      const out = vals.map((v) => v.dataSync()[0]!);
      tf.dispose(vals);
      return out;
    }, 'sparsity');
    scalarClose('l1', got[0]!, 3.1, 1e-6);
    scalarClose('hoyer', got[1]!, 3.1 / Math.sqrt(n2), 1e-6);
    scalarClose('hoyerSquare', got[2]!, (3.1 * 3.1) / n2, 1e-6);
    t.dispose();
  });

  it('orthogonalityPenalty is ~0 for orthonormal factors and leaks nothing', async () => {
    await tf.setBackend('cpu');
    const q = tf.tensor2d([1, 0, 0, 1, 0, 0], [3, 2]);
    const v = await expectNoLeakedTensors(() => {
      const p = orthogonalityPenalty(q, q);
      const x = p.dataSync()[0]!;
      p.dispose();
      return x;
    }, 'orth');
    expect(v).toBe(0);
    q.dispose();
  });
});
