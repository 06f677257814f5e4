import { readFileSync, existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createOptimizer, defaultDecays, type OptimizerConfig, type ParamSet } from './optimizers.js';

const REF = '/work/shared/reference/optim.json';
/** Relative tolerance vs the float64 reference (float32 arithmetic, 5 steps). */
const REL_TOL = 1e-6;

interface Tensor { shape: number[]; data: number[] }
interface Variant { lr_used_at_step: number[]; trajectory: Tensor; state_after_step: Record<string, Tensor>[] }
interface OptimRef { initial_params: Tensor; grads: Tensor; variants: Record<string, Variant> }

const SGD: OptimizerConfig = { optimizer: 'sgd', momentum: 0.9, nesterov: false, weightDecay: 5e-4, decayS: false, adamBetas: [0.9, 0.999], adamEps: 1e-8 };
const CONFIGS: Record<string, OptimizerConfig> = {
  sgd_momentum: SGD,
  sgd_nesterov: { ...SGD, nesterov: true },
  adam: { ...SGD, optimizer: 'adam', weightDecay: 0 },
  sgd_momentum_multistep: SGD,
  sgd_nesterov_multistep: { ...SGD, nesterov: true },
};

function expectClose(actual: Float32Array, expected: number[], label: string): void {
  expect(actual.length, label).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = Math.fround(expected[i]);
    // purely relative per element (an exact zero must come out exactly zero)
    const tol = REL_TOL * Math.abs(e) + 1e-30;
    if (Math.abs(actual[i] - e) > tol) throw new Error(`${label}[${i}]: got ${actual[i]}, expected ${e} (|diff| ${Math.abs(actual[i] - e)} > ${tol})`);
  }
}

describe.skipIf(!existsSync(REF))('optimizers vs PyTorch reference (optim.json)', () => {
  const ref = existsSync(REF) ? (JSON.parse(readFileSync(REF, 'utf8')) as OptimRef) : null;
  for (const name of Object.keys(CONFIGS)) {
    it(`${name}: params=[7] 5 steps, trajectory and state match`, () => {
      const v = ref!.variants[name];
      expect(v, `variant ${name} in optim.json`).toBeDefined();
      const n = ref!.initial_params.data.length;
      const opt = createOptimizer(CONFIGS[name], ['w']);
      const params: ParamSet = new Map([['w', Float32Array.from(ref!.initial_params.data)]]);
      expectClose(params.get('w')!, v.trajectory.data.slice(0, n), `${name} trajectory[0]`);
      for (let t = 0; t < 5; t++) {
        const grads: ParamSet = new Map([['w', Float32Array.from(ref!.grads.data.slice(t * n, (t + 1) * n))]]);
        opt.step(params, grads, v.lr_used_at_step[t]);
        expectClose(params.get('w')!, v.trajectory.data.slice((t + 1) * n, (t + 2) * n), `${name} trajectory[${t + 1}]`);
        const st = opt.state();
        expect(st.step).toBe(t + 1);
        // optim.json's five state_after_step entries are identical: the generator appended the
        // live (mutated) PyTorch buffer each step, so every entry is the state after step 5.
        // Compare per step only where an entry differs from the final one.
        const ref_t = v.state_after_step[t];
        const final = v.state_after_step[4];
        if (t === 4 || JSON.stringify(ref_t) !== JSON.stringify(final)) {
          for (const [slot, tensor] of Object.entries(ref_t)) {
            expectClose(st.slots[slot]['w'], tensor.data, `${name} ${slot} after step ${t + 1}`);
          }
        }
      }
    });
  }

  it('state()/loadState() mid-trajectory resumes identically (sgd_nesterov and adam)', () => {
    for (const name of ['sgd_nesterov', 'adam']) {
      const v = ref!.variants[name];
      const n = 7;
      const grad = (t: number): ParamSet => new Map([['w', Float32Array.from(ref!.grads.data.slice(t * n, (t + 1) * n))]]);
      const a = createOptimizer(CONFIGS[name], ['w']);
      const pa: ParamSet = new Map([['w', Float32Array.from(ref!.initial_params.data)]]);
      for (let t = 0; t < 2; t++) a.step(pa, grad(t), v.lr_used_at_step[t]);
      const b = createOptimizer(CONFIGS[name], ['w']);
      b.loadState(structuredClone(a.state()));
      const pb: ParamSet = new Map([['w', pa.get('w')!.slice()]]);
      for (let t = 2; t < 5; t++) {
        a.step(pa, grad(t), v.lr_used_at_step[t]);
        b.step(pb, grad(t), v.lr_used_at_step[t]);
      }
      expect(pb.get('w')).toEqual(pa.get('w'));
    }
  });
});

describe('weight decay selection', () => {
  it('excludes biases, singular values (unless decayS), BN by name and the caller noDecay set', () => {
    expect(defaultDecays('layers.0.conv1.U', false)).toBe(true);
    expect(defaultDecays('layers.0.conv1.s', false)).toBe(false);
    expect(defaultDecays('layers.0.conv1.s', true)).toBe(true);
    expect(defaultDecays('linear.bias', false)).toBe(false);
    expect(defaultDecays('bn1.weight', false)).toBe(false);
    expect(defaultDecays('layers.2.bn2.weight', false)).toBe(false);
    const opt = createOptimizer(CONFIGS.sgd_momentum, ['a.U', 'a.s', 'sc.1.weight', 'fc.weight'], { noDecay: new Set(['sc.1.weight']) });
    expect([...opt.decayed]).toEqual(['a.U', 'fc.weight']);
  });

  it('params=[2] no-decay param gets plain momentum SGD; decayed one gets g + wd·p', () => {
    const opt = createOptimizer({ ...CONFIGS.sgd_momentum, weightDecay: 0.5 }, ['x.s', 'x.U']);
    const params: ParamSet = new Map([['x.s', Float32Array.of(2)], ['x.U', Float32Array.of(2)]]);
    opt.step(params, new Map([['x.s', Float32Array.of(1)], ['x.U', Float32Array.of(1)]]), 0.1);
    expect(params.get('x.s')![0]).toBeCloseTo(2 - 0.1 * 1, 6);
    expect(params.get('x.U')![0]).toBeCloseTo(2 - 0.1 * (1 + 0.5 * 2), 6);
  });

  it('refuses a gradient of the wrong length and state of the other optimizer', () => {
    const opt = createOptimizer(CONFIGS.sgd_momentum, ['w']);
    expect(() => opt.step(new Map([['w', new Float32Array(3)]]), new Map([['w', new Float32Array(2)]]), 0.1)).toThrow(/has 2 elements, parameter has 3/);
    const adam = createOptimizer(CONFIGS.adam, ['w']);
    expect(() => adam.loadState(opt.state())).toThrow(/'sgd'/);
  });
});
