/**
 * SGD (momentum, Nesterov, L2 weight decay) and Adam on plain Float32Arrays, in PyTorch's form.
 *
 * The coordinator is framework-free: it averages the workers' gradients and applies the update
 * here, then broadcasts the parameters. The formulas match `torch.optim.SGD` / `torch.optim.Adam`
 * exactly (checked against ../shared/reference/optim.json), so a run can be compared with the
 * PyTorch reference implementation step by step. Each update is one pass over each tensor, in place.
 */
import type { RunConfig } from './config/schema.js';
import { SvdTrainError } from './errors.js';

/** Parameters (or gradients) by PyTorch state_dict name, in `named_parameters()` order. */
export type ParamSet = Map<string, Float32Array>;

/**
 * Serializable optimizer state: `slots[slot][param]` is a per-parameter buffer
 * (SGD: `momentum_buffer`; Adam: `exp_avg`, `exp_avg_sq`), `step` counts optimizer steps taken.
 */
export interface OptimizerState {
  kind: 'sgd' | 'adam';
  step: number;
  slots: Record<string, Record<string, Float32Array>>;
}

export interface Optimizer {
  readonly kind: 'sgd' | 'adam';
  /** Names that receive weight decay (in parameter order). */
  readonly decayed: ReadonlySet<string>;
  /**
   * Updates `params` in place from `grads` at learning rate `lr`. Params without a grad are skipped
   * (as in PyTorch). `momentum` (SGD momentum, Adam β1) overrides the configured value for this
   * step, as a momentum schedule does in PyTorch (`momentumAt`).
   */
  step(params: ParamSet, grads: ParamSet, lr: number, momentum?: number): void;
  state(): OptimizerState;
  loadState(s: OptimizerState): void;
}

export type OptimizerConfig = Pick<RunConfig, 'optimizer' | 'momentum' | 'nesterov' | 'weightDecay' | 'decayOn' | 'adamBetas' | 'adamEps'>;

export interface CreateOptimizerOptions {
  /**
   * With `decayOn: 'factors'`, more names not to decay, added to the name rules below. The model
   * knows which tensors are BN weights/biases (their names, e.g. `layers.0.shortcut.1.weight`, look
   * like conv weights), so the caller should pass them here. Ignored with `decayOn: 'all'`.
   */
  noDecay?: ReadonlySet<string> | Iterable<string>;
}

/**
 * Weight-decay rule by name. `decayOn: 'all'` decays every parameter (PyTorch's SGD). `'factors'`
 * skips biases, singular values (`*.s`) and parameters whose names mark them as batch norm (`bn*`,
 * `*.bn*.`, `batch_norm`).
 */
export function defaultDecays(name: string, decayOn: RunConfig['decayOn']): boolean {
  if (decayOn === 'all') return true;
  if (name.endsWith('.bias') || name === 'bias') return false;
  if (name.endsWith('.s') || name === 's') return false;
  if (/(^|\.)(bn\d*|batch_?norm\d*)\./i.test(name)) return false;
  return true;
}

function checkPair(name: string, p: Float32Array, g: Float32Array): void {
  if (p.length !== g.length) {
    throw new SvdTrainError('SHAPE_MISMATCH', `optimizer step: gradient of '${name}' has ${g.length} elements, parameter has ${p.length}; gradients must be in the parameter's layout`);
  }
}

/** A loaded optimizer buffer must have its parameter's length: a shorter one would step on NaN. */
function checkBuffer(name: string, slot: string, buf: Float32Array, n: number): void {
  if (buf.length !== n) {
    throw new SvdTrainError(
      'CHECKPOINT_CONFIG_MISMATCH',
      `optimizer state slot '${slot}' holds ${buf.length} values for '${name}', which has ${n}; the checkpoint's optimizer state is for a different model. Fix: resume from a checkpoint of this model, or start with --from to keep only its weights`,
    );
  }
}

class Sgd implements Optimizer {
  readonly kind = 'sgd' as const;
  private t = 0;
  private bufs = new Map<string, Float32Array>();
  constructor(
    private readonly names: readonly string[],
    readonly decayed: ReadonlySet<string>,
    private readonly momentum: number,
    private readonly nesterov: boolean,
    private readonly wd: number,
  ) {}

  step(params: ParamSet, grads: ParamSet, lr: number, momentum?: number): void {
    const mom = momentum ?? this.momentum;
    for (const name of this.names) {
      const p = params.get(name);
      const g = grads.get(name);
      if (p === undefined || g === undefined) continue;
      checkPair(name, p, g);
      const wd = this.decayed.has(name) ? this.wd : 0;
      const n = p.length;
      if (mom === 0) {
        for (let i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        continue;
      }
      let buf = this.bufs.get(name);
      if (buf === undefined) {
        // PyTorch: the first step initializes the buffer to the (decayed) gradient itself.
        buf = new Float32Array(n);
        for (let i = 0; i < n; i++) buf[i] = g[i] + wd * p[i];
        this.bufs.set(name, buf);
        if (this.nesterov) for (let i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i] + mom * buf[i]);
        else for (let i = 0; i < n; i++) p[i] -= lr * buf[i];
        continue;
      }
      checkBuffer(name, 'momentum_buffer', buf, n);
      if (this.nesterov) {
        for (let i = 0; i < n; i++) {
          const gi = g[i] + wd * p[i];
          const b = (buf[i] = mom * buf[i] + gi);
          p[i] -= lr * (gi + mom * b);
        }
      } else {
        for (let i = 0; i < n; i++) {
          const b = (buf[i] = mom * buf[i] + (g[i] + wd * p[i]));
          p[i] -= lr * b;
        }
      }
    }
    this.t++;
  }

  state(): OptimizerState {
    const mb: Record<string, Float32Array> = {};
    for (const [k, v] of this.bufs) mb[k] = v.slice();
    return { kind: 'sgd', step: this.t, slots: { momentum_buffer: mb } };
  }

  loadState(s: OptimizerState): void {
    checkKind(s, 'sgd');
    this.t = s.step;
    this.bufs = loadSlot(s, 'momentum_buffer', this.names);
  }
}

class Adam implements Optimizer {
  readonly kind = 'adam' as const;
  private t = 0;
  private m = new Map<string, Float32Array>();
  private v = new Map<string, Float32Array>();
  constructor(
    private readonly names: readonly string[],
    readonly decayed: ReadonlySet<string>,
    private readonly beta1: number,
    private readonly beta2: number,
    private readonly eps: number,
    private readonly wd: number,
  ) {}

  step(params: ParamSet, grads: ParamSet, lr: number, momentum?: number): void {
    this.t++;
    const { beta2, eps } = this;
    const beta1 = momentum ?? this.beta1;
    const bc1 = 1 - beta1 ** this.t;
    const sqrtBc2 = Math.sqrt(1 - beta2 ** this.t);
    const stepSize = lr / bc1;
    for (const name of this.names) {
      const p = params.get(name);
      const g = grads.get(name);
      if (p === undefined || g === undefined) continue;
      checkPair(name, p, g);
      const n = p.length;
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (m !== undefined && v !== undefined) {
        checkBuffer(name, 'exp_avg', m, n);
        checkBuffer(name, 'exp_avg_sq', v, n);
      } else {
        m = new Float32Array(n);
        v = new Float32Array(n);
        this.m.set(name, m);
        this.v.set(name, v);
      }
      const wd = this.decayed.has(name) ? this.wd : 0;
      for (let i = 0; i < n; i++) {
        const gi = g[i] + wd * p[i];
        const mi = (m[i] = beta1 * m[i] + (1 - beta1) * gi);
        const vi = (v[i] = beta2 * v[i] + (1 - beta2) * gi * gi);
        p[i] -= (stepSize * mi) / (Math.sqrt(vi) / sqrtBc2 + eps);
      }
    }
  }

  state(): OptimizerState {
    const m: Record<string, Float32Array> = {};
    const v: Record<string, Float32Array> = {};
    for (const [k, a] of this.m) m[k] = a.slice();
    for (const [k, a] of this.v) v[k] = a.slice();
    return { kind: 'adam', step: this.t, slots: { exp_avg: m, exp_avg_sq: v } };
  }

  loadState(s: OptimizerState): void {
    checkKind(s, 'adam');
    this.t = s.step;
    this.m = loadSlot(s, 'exp_avg', this.names);
    this.v = loadSlot(s, 'exp_avg_sq', this.names);
  }
}

function checkKind(s: OptimizerState, kind: 'sgd' | 'adam'): void {
  if (s.kind !== kind) {
    throw new SvdTrainError('CHECKPOINT_CONFIG_MISMATCH', `optimizer state is for '${s.kind}', this run uses '${kind}'; resume with --optimizer ${s.kind} or start without --resume`);
  }
}

function loadSlot(s: OptimizerState, slot: string, names: readonly string[]): Map<string, Float32Array> {
  const src = s.slots[slot] ?? {};
  const known = new Set(names);
  const out = new Map<string, Float32Array>();
  for (const [k, a] of Object.entries(src)) {
    if (!known.has(k)) {
      throw new SvdTrainError('CHECKPOINT_CONFIG_MISMATCH', `optimizer state slot '${slot}' has parameter '${k}' that this model does not have; the checkpoint is for a different model`);
    }
    out.set(k, Float32Array.from(a));
  }
  return out;
}

/** Builds the optimizer named by `cfg.optimizer` over the parameters `paramNames` (in order). */
export function createOptimizer(cfg: OptimizerConfig, paramNames: readonly string[], opts: CreateOptimizerOptions = {}): Optimizer {
  const noDecay = new Set(cfg.decayOn === 'all' ? [] : (opts.noDecay ?? []));
  const decayed = new Set(paramNames.filter((n) => !noDecay.has(n) && defaultDecays(n, cfg.decayOn)));
  const names = [...paramNames];
  if (cfg.optimizer === 'sgd') return new Sgd(names, decayed, cfg.momentum, cfg.nesterov, cfg.weightDecay);
  if (cfg.optimizer === 'adam') return new Adam(names, decayed, cfg.adamBetas[0], cfg.adamBetas[1], cfg.adamEps, cfg.weightDecay);
  throw new SvdTrainError('CONFIG_INVALID', `unknown optimizer '${String(cfg.optimizer)}'; expected 'sgd' or 'adam'`);
}
