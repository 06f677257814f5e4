import { describe, expect, it } from 'vitest';
import { cosineLr, lrAt, momentumAt, multistepLr, onecycleLr, sparsityWeightAt, type MomentumScheduleConfig, type ScheduleConfig } from './lr-schedule.js';
import { readFileSync } from 'node:fs';
import { referenceFile, referenceMissing } from './testing.js';

/** Golden values printed once by PyTorch 2 (`param_groups[0]['lr']` before each optimizer.step()). */
const TORCH_ONECYCLE_20 = [0.0040000000000000036, 0.013167184270002533, 0.037167184270002526, 0.06683281572999747, 0.09083281572999748, 0.1, 0.09874640062350874, 0.09504846320134738, 0.089091617757105, 0.0811745653949763, 0.07169430017913009, 0.06112620219362893, 0.0500002, 0.03887419780637107, 0.028306099820869922, 0.0188258346050237, 0.010908782242895003, 0.004951936798652629, 0.0012539993764912555, 4e-7];
/** OneCycleLR(max_lr=0.1, total_steps=20) with cycle_momentum: `param_groups[0]['momentum']` before each step (PyTorch 1.13). */
const TORCH_ONECYCLE_MOMENTUM_20 = [0.95,  0.9404508497187474,  0.9154508497187474,  0.8845491502812526,  0.8595491502812526,  0.85,  0.8512536043909088,  0.854951556604879,  0.8609084258765984,  0.8688255099070633,  0.878305813044122,  0.8888739533021842,  0.8999999999999999,  0.9111260466978157,  0.9216941869558779,  0.9311744900929366,  0.9390915741234015,  0.945048443395121,  0.9487463956090911,  0.95];
const TORCH_ONECYCLE_7 = [0.0049999999999999975, 0.049721049884972585, 0.043332970498949915, 0.030582460325558954, 0.015900607916449285, 0.004389686611458033, 5e-5];
const TORCH_COSINE_10 = [0.1, 0.09755282581475769, 0.09045084971874738, 0.07938926261462367, 0.06545084971874739, 0.05000000000000001, 0.03454915028125264, 0.020610737385376353, 0.009549150281252635, 0.002447174185242324];
const TORCH_MULTISTEP_3_6 = [0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002];

const BASE: ScheduleConfig = { schedule: 'constant', lr: 0.1, milestones: [81, 122], gamma: 0.1, warmupEpochs: 0, pctStart: 0.3, divFactor: 25, finalDivFactor: 1e4, epochs: 3 };

describe('lr schedules vs PyTorch', () => {
  it('onecycle max_lr=0.1 total=20 (defaults) matches OneCycleLR step by step', () => {
    TORCH_ONECYCLE_20.forEach((v, s) => expect(onecycleLr(0.1, 20, s)).toBeCloseTo(v, 14));
    // via lrAt: 4 epochs × 5 steps
    TORCH_ONECYCLE_20.forEach((v, s) => expect(lrAt({ ...BASE, schedule: 'onecycle', epochs: 4 }, s, 5)).toBeCloseTo(v, 14));
  });

  it('onecycle max_lr=0.05 total=7 pct=0.25 div=10 final=100', () => {
    TORCH_ONECYCLE_7.forEach((v, s) => expect(onecycleLr(0.05, 7, s, 0.25, 10, 100)).toBeCloseTo(v, 14));
  });

  it('onecycle matches the formula: start max/div, peak max at pct·T−1, end max/div/final', () => {
    const T = 1000;
    expect(onecycleLr(0.2, T, 0)).toBeCloseTo(0.2 / 25, 15);
    expect(onecycleLr(0.2, T, 299)).toBeCloseTo(0.2, 15);
    expect(onecycleLr(0.2, T, T - 1)).toBeCloseTo(0.2 / 25 / 1e4, 15);
    const pct = (600 - 299) / (999 - 299);
    expect(onecycleLr(0.2, T, 600)).toBeCloseTo(0.2 / 25e4 + ((0.2 - 0.2 / 25e4) / 2) * (Math.cos(Math.PI * pct) + 1), 15);
  });

  it('cosine T=10 matches CosineAnnealingLR; multistep milestones [3,6] matches MultiStepLR exactly', () => {
    TORCH_COSINE_10.forEach((v, s) => expect(cosineLr(0.1, 10, s)).toBeCloseTo(v, 14));
    TORCH_MULTISTEP_3_6.forEach((v, s) => expect(multistepLr(0.1, [3, 6], 0.1, s)).toBe(v));
    // milestones in epochs: [1, 2] epochs × 3 steps per epoch = steps [3, 6]
    TORCH_MULTISTEP_3_6.forEach((v, s) => expect(lrAt({ ...BASE, schedule: 'multistep', milestones: [1, 2] }, s, 3)).toBe(v));
  });

  it.skipIf(referenceMissing('optim'))('multistep milestones [2,4] in steps reproduces optim.json lr_used_at_step bit for bit', () => {
    const ref = JSON.parse(readFileSync(referenceFile('optim'), 'utf8'));
    const used: number[] = ref.variants.sgd_momentum_multistep.lr_used_at_step;
    expect(used.map((_, s) => multistepLr(0.1, [2, 4], 0.1, s))).toEqual(used);
    expect(used.map((_, s) => lrAt({ ...BASE, schedule: 'multistep', milestones: [2, 4], epochs: 5 }, s, 1))).toEqual(used);
  });

  it('constant, and linear warm-up over 2 epochs composes with any schedule', () => {
    expect(lrAt(BASE, 17, 4)).toBe(0.1);
    const w = { ...BASE, warmupEpochs: 2 };
    [0.1 / 8, 0.2 / 8, 0.3 / 8, 0.1, 0.1, 0.1].forEach((v, i) => expect(lrAt(w, [0, 1, 2, 7, 8, 9][i], 4)).toBeCloseTo(v, 15));
    const wc = { ...BASE, schedule: 'cosine' as const, warmupEpochs: 1, epochs: 3 };
    expect(lrAt(wc, 1, 10)).toBeCloseTo(cosineLr(0.1, 30, 1) * 0.2, 15);
    expect(lrAt(wc, 10, 10)).toBeCloseTo(cosineLr(0.1, 30, 10), 15);
    expect(() => lrAt(BASE, 0, 0)).toThrow(/stepsPerEpoch/);
  });
});

describe('momentum schedule', () => {
  const MOM: MomentumScheduleConfig = { schedule: 'onecycle', epochs: 4, pctStart: 0.3, cycleMomentum: true, baseMomentum: 0.85, maxMomentum: 0.95, optimizer: 'sgd', momentum: 0.9, adamBetas: [0.8, 0.999] };
  it('onecycle total=20 cycles 0.95 -> 0.85 -> 0.95 exactly as OneCycleLR(cycle_momentum=True)', () => {
    TORCH_ONECYCLE_MOMENTUM_20.forEach((v, s) => expect(momentumAt(MOM, s, 5)).toBeCloseTo(v, 14));
  });
  it('is the configured constant without cycling or with another schedule (SGD momentum, Adam β1)', () => {
    expect(momentumAt({ ...MOM, cycleMomentum: false }, 7, 5)).toBe(0.9);
    expect(momentumAt({ ...MOM, schedule: 'cosine' }, 7, 5)).toBe(0.9);
    expect(momentumAt({ ...MOM, schedule: 'multistep', optimizer: 'adam' }, 7, 5)).toBe(0.8);
  });
});

describe('sparsity schedule', () => {
  it('is 0 before the start fraction of the steps and λ_s from there, as torch_train.py --sparsity-start', () => {
    const cfg = { lambdaS: 0.012, sparsityStart: 0.3, sparsityEnd: 1, epochs: 10 };
    // 10 epochs × 7 steps = 70 steps; torch_train: step >= 0.3 · 70 = 21.
    expect(sparsityWeightAt(cfg, 20, 7)).toBe(0);
    expect(sparsityWeightAt(cfg, 21, 7)).toBe(0.012);
    expect(sparsityWeightAt(cfg, 69, 7)).toBe(0.012);
    expect(sparsityWeightAt({ ...cfg, sparsityStart: 0 }, 0, 7)).toBe(0.012);
    // A start between steps rounds up: 0.25 · 70 = 17.5, so step 17 is off and 18 on.
    expect(sparsityWeightAt({ ...cfg, sparsityStart: 0.25 }, 17, 7)).toBe(0);
    expect(sparsityWeightAt({ ...cfg, sparsityStart: 0.25 }, 18, 7)).toBe(0.012);
  });

  it('is 0 again from the end fraction of the steps on, as torch_train.py --sparsity-end', () => {
    const cfg = { lambdaS: 0.012, sparsityStart: 0, sparsityEnd: 0.8, epochs: 10 };
    // 70 steps; the term stops at step 0.8 · 70 = 56.
    expect(sparsityWeightAt(cfg, 0, 7)).toBe(0.012);
    expect(sparsityWeightAt(cfg, 55, 7)).toBe(0.012);
    expect(sparsityWeightAt(cfg, 56, 7)).toBe(0);
    expect(sparsityWeightAt(cfg, 69, 7)).toBe(0);
    // Both ends: on for steps 21..55 only; an end between steps rounds up like the start (0.75 · 70 = 52.5).
    const window = { ...cfg, sparsityStart: 0.3, sparsityEnd: 0.75 };
    expect([20, 21, 52, 53].map((s) => sparsityWeightAt(window, s, 7))).toEqual([0, 0.012, 0.012, 0]);
  });
});
