"""PyTorch reference of svd-train's whole method: train, then optionally prune and fine-tune.

SVD-ResNet-20 (channel decomposition, or spatial with --decomposition spatial), CE + lambda_o * orth + lambda_s * Hoyer, SGD Nesterov
momentum 0.9, one-cycle lr peaking at 0.1, weight decay 5e-4, batch 128, crop + flip, on the real
CIFAR-10 binary batches. It exists to compare svd-train's accuracy against, and to try schedules
cheaply before one is run in svd-train (on a GPU, with --device cuda, an epoch takes seconds).
The switches reproduce svd-train's choices one at a time, so that an accuracy gap can be traced to
a choice rather than guessed at:

  --no-momentum-cycle   constant momentum (PyTorch's OneCycleLR cycles it 0.95 -> 0.85 -> 0.95)
  --no-decay-s          no weight decay on singular values, BN parameters and biases
                        (svd-train's --decay-on factors)
  --bn-groups G         batch norm over G sub-batches of 128/G (svd-train: one group per worker)
  --sparsity-start F    no sparsity term for the first fraction F of the steps (svd-train's
                        --sparsity-start, step for step)
  --sparsity-end F      no sparsity term from the fraction F of the steps on (svd-train's
                        --sparsity-end, step for step)

The pipeline stage mirrors `svd-coord start --prune-energy/--prune-macs --finetune-epochs`:
  --prune-energy E | --prune-macs N   after training, remove the smallest singular values holding at
                        most a fraction E of each layer's energy (sum of s^2), or pick the smallest E
                        whose model costs at most N MACs per image; every layer then runs in its
                        cheaper form by MACs. Batch-norm statistics are re-estimated on 4,096
                        evenly spread training images (crop + flip) before each evaluation,
                        and for a sweep of energies, as svd-train does.
  --finetune-epochs N [--finetune-lr X]   then fine-tune the pruned model (one-cycle, peak X,
                        default lr/10, no sparsity term).
  --finetune-average K   then average the fine-tuning's last K epochs (the parameters' mean at
                        each epoch's end), re-estimate its batch-norm statistics in one pass over
                        the training images (crop + flip, and Cutout with --cutout) and evaluate it
                        (svd-train's --finetune-average).
  --distill-alpha A [--distill-temperature T]   while fine-tuning, the data term is
                        (1 - A)*CE + A*T^2*KL(teacher || model), the trained full-rank model
                        teaching in eval mode on the same augmented batch (svd-train's
                        --distill-alpha in the pipeline).

And from a trained plain model, as `svd-coord start --plain-epochs N`:
  --plain-epochs N [--plain-lr X]   first train the plain ResNet-20 (no SVD, no regularizer;
                        one-cycle, peak X, default 0.1) for N epochs, then start the method from its
                        exact full-rank SVD (svd-coord decompose); with --distill-alpha the plain
                        model teaches the fine-tuning, and with --distill-training the training too.
  --plain-from DIR      instead, take the plain ResNet-20 from an svd-train stock export
                        (`svd-coord export CKPT --stock --out DIR` of a plain checkpoint, e.g. the
                        record's <out>/plain/checkpoints/ckpt-….svdckpt): the same plain model, so the
                        method's phases can be compared with svd-train's run for run.
  The record's spatial recipe (docs/results/resnet20-pipeline-one-command-spatial):
    --plain-epochs 40 --decomposition spatial --distill-alpha 0.7 --distill-training --lambda-s 0.035
    --lr 0.05 --epochs 8 --prune-macs 13.6e6 --finetune-epochs 95 --finetune-lr 0.02
    --finetune-average 5 --cutout 8

Usage: /usr/bin/python3 bench/torch_train.py --data ../shared/cifar-10-batches-bin --epochs 1
Prints one line per epoch (train and test accuracy, seconds), the pipeline's table, and a final
JSON line. --checkpoint PATH resumes both stages after a stop.
"""
import argparse
import copy
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_malloc import keep_freed_memory  # noqa: E402

if __name__ == '__main__':
    keep_freed_memory()

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from train_step_torch import ResNet20, SVDConv, SVDDense, regularizers

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)
SWEEP = (0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.2)  # svd-train's default --sweep-energies
BN_RECALIBRATION_IMAGES = 4096  # svd-train's, as are the chunk and the evenly spread indices
BN_CHUNK = 256
PLAIN_RESNET20_MACS = 40813184


def load(data, names, limit=0):
    raw = np.concatenate([np.fromfile(os.path.join(data, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
    if limit:
        raw = raw[:limit]
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy((x - MEAN) / STD), torch.from_numpy(raw[:, 0].astype(np.int64))


def augment_draws(n, gen, cutout=0):
    """The random draws of `augment` for n images, from `gen` (CPU) in a fixed order, as one (n, 5)
    int64 CPU tensor: crop offsets dy and dx, flip, Cutout centre cy and cx (0 without Cutout)."""
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = (torch.rand(n, generator=gen) < 0.5).long()
    if cutout > 0:
        cy = torch.randint(0, 32, (n,), generator=gen)
        cx = torch.randint(0, 32, (n,), generator=gen)
    else:
        cy = cx = torch.zeros(n, dtype=torch.long)
    return torch.stack([dy, dx, flip, cy, cx], 1)


def augment(x, gen, cutout=0, draws=None):
    """Random 32x32 crop of the 4-pixel zero-padded image, then a horizontal flip with p = 0.5, then
    (cutout > 0) a cutout x cutout square centred anywhere, clipped at the border, set to 0 (the mean), as
    svd-train's --cutout (its draws differ: another RNG). The draws come from `gen` (CPU) in the same
    order whatever the device, so runs repeat across devices; or, already on x's device, from `draws`
    (augment_draws' rows for these images), which spares a GPU run one host-to-device copy, and with it
    one stream synchronisation, per batch."""
    n = x.shape[0]
    d = draws if draws is not None else augment_draws(n, gen, cutout).to(x.device)
    dy, dx, flip = d[:, 0], d[:, 1], d[:, 2].bool()
    padded = F.pad(x, (4, 4, 4, 4))
    ar = torch.arange(32, device=x.device)
    rows = (dy[:, None] + ar)[:, None, :, None]
    cols = torch.where(flip[:, None], dx[:, None] + 31 - ar, dx[:, None] + ar)[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(3, device=x.device)[None, :, None, None], rows, cols]
    if cutout > 0:
        cy, cx = d[:, 3], d[:, 4]
        top, left = cy - cutout // 2, cx - cutout // 2
        inside_r = (ar[None, :] >= top[:, None]) & (ar[None, :] < top[:, None] + cutout)
        inside_c = (ar[None, :] >= left[:, None]) & (ar[None, :] < left[:, None] + cutout)
        out = out.masked_fill((inside_r[:, :, None] & inside_c[:, None, :])[:, None, :, :], 0.0)
    return out


def evaluate(model, x, y, batch=1000):
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train(was)
    return correct / x.shape[0]


def svd_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (SVDConv, SVDDense))]


def output_sizes(model, device):
    """(input width, output height, output width) of every SVD conv, from one forward pass of a
    single image."""
    sizes, hooks = {}, []
    for name, m in svd_layers(model):
        if isinstance(m, SVDConv):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: sizes.__setitem__(name, (i[0].shape[3], o.shape[2], o.shape[3]))))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device=device))
    model.train(was)
    for h in hooks:
        h.remove()
    return sizes


def layer_macs(m, r, size):
    """MACs per image of one SVD layer at rank r in its cheaper form, as svd-train's countMacs."""
    if isinstance(m, SVDConv):
        return min(m.costs(r, *size))
    fout, fin = m.U.shape[0], m.V.shape[0]
    return min(fin * fout, r * (fin + fout))


def keep_by_energy(s, energy):
    """Indices of the singular values that stay: svd-train's selectRankByEnergy (largest first until
    at least 1 - energy of sum(s^2) is kept; at least one; energy 0 keeps all)."""
    n = s.shape[0]
    if energy == 0:
        return list(range(n))
    w = (s.detach().double().cpu() ** 2).tolist()
    order = sorted(range(n), key=lambda i: (-w[i], i))
    target, acc, k = (1 - energy) * sum(w), 0.0, 0
    while k < n and (acc < target or k == 0):
        acc += w[order[k]]
        k += 1
    return sorted(order[:k])


def macs_at(model, sizes, energy):
    return sum(layer_macs(m, len(keep_by_energy(m.s, energy)), sizes.get(n)) for n, m in svd_layers(model))


def energy_for_macs(model, sizes, target):
    """The smallest energy whose pruned model costs at most `target` MACs per image (bisection; MACs
    only fall as the energy grows), rounded up to 3 significant digits where that still fits."""
    if macs_at(model, sizes, 0) <= target:
        return 0.0
    lo, hi = 0.0, 1.0 - 1e-9
    if macs_at(model, sizes, hi) > target:
        raise SystemExit(f'--prune-macs {target:g} is below what pruning can reach; raise it, or give --prune-energy instead')
    for _ in range(60):
        mid = (lo + hi) / 2
        if macs_at(model, sizes, mid) <= target:
            hi = mid
        else:
            lo = mid
    scale = 10.0 ** (math.floor(math.log10(hi)) - 2)
    short = float(f'{math.ceil(hi / scale) * scale:.3g}')  # a larger energy prunes at least as much
    return short if hi <= short < 1 else hi


def prune(model, sizes, energy, ranks=None):
    """A copy of `model` with each SVD layer cut to the singular triplets `keep_by_energy` keeps (or
    the first ranks[name] of them), every layer in its cheaper form by MACs (`sizes`: output_sizes).
    Returns it and the ranks."""
    pruned = copy.deepcopy(model)
    out = {}
    for name, m in svd_layers(pruned):
        keep = list(range(ranks[name])) if ranks else keep_by_energy(m.s, energy)
        idx = torch.tensor(keep, device=m.s.device)
        with torch.no_grad():
            m.U = nn.Parameter(m.U[:, idx].contiguous())
            m.s = nn.Parameter(m.s[idx].contiguous())
            m.V = nn.Parameter(m.V[:, idx].contiguous())
        if isinstance(m, SVDConv):
            merged, factored = m.costs(len(keep), *sizes[name])
            m.mode = 'reconstruct' if merged <= factored else 'factored'
        out[name] = len(keep)
    return pruned, out


def recalibrate_bn(model, x):
    """Re-estimates every BN's running statistics as the mean over chunks of train-mode batch
    statistics (momentum None) on `x`; no gradients, no weight change. Returns the images used."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
    was = model.training
    model.train()
    used = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], BN_CHUNK):
            chunk = x[i:i + BN_CHUNK]
            if chunk.shape[0] < 2:  # one image has no variance to estimate
                break
            model(chunk)
            used += chunk.shape[0]
    for b, mo in zip(bns, saved):
        b.momentum = mo
    model.train(was)
    return used


def make_optimizer(model, a, lr, epochs, steps_per_epoch):
    no_decay = set()
    if a.no_decay_s:
        for m in model.modules():
            if isinstance(m, (SVDConv, SVDDense)):
                no_decay.add(id(m.s))
            if isinstance(m, nn.BatchNorm2d):
                no_decay.update((id(m.weight), id(m.bias)))
            if isinstance(m, SVDDense):
                no_decay.add(id(m.bias))
    params = list(model.parameters())
    groups = [
        {'params': [p for p in params if id(p) not in no_decay], 'weight_decay': 5e-4},
        {'params': [p for p in params if id(p) in no_decay], 'weight_decay': 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, cycle_momentum=not a.no_momentum_cycle)
    return opt, sched


def save_atomic(obj, path):
    tmp = path + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def distill_term(logits, teacher_logits, temperature):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (svd-train's distillSum / n)."""
    return temperature * temperature * F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                                                reduction='batchmean', log_target=True)


def decompose(plain, decomp, device):
    """The plain model's exact full-rank SVD as an SVD-ResNet-20 (svd-coord decompose): each conv's
    matrix in SVDConv's layout and the dense weight factored in float64, batch norm and bias copied."""
    model = ResNet20('reconstruct', decomp).to(device).train()
    src = dict(plain.named_modules())
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (SVDConv, SVDDense)):
                w = src[name].weight.double()
                u, s, vh = torch.linalg.svd(m.to_matrix(w) if isinstance(m, SVDConv) else w, full_matrices=False)
                m.U.copy_(u.float())
                m.s.copy_(s.float())
                m.V.copy_(vh.t().float())
                if isinstance(m, SVDDense):
                    m.bias.copy_(src[name].bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.load_state_dict(src[name].state_dict())
    return model


def load_stock_plain(folder, device):
    """A plain ResNet-20 from an svd-train stock export (model.json + weights.bin): tfjs layer
    `layers_0_conv1` is module `layers.0.conv1`, kernels HWIO -> OIHW, the dense kernel transposed.
    Every weight of the PyTorch model must be there with its shape, and nothing else."""
    if not os.path.isfile(os.path.join(folder, 'model.json')):
        raise SystemExit(f'--plain-from {folder}: no model.json there. Fix: svd-coord export CKPT --stock --out {folder} with a plain checkpoint')
    with open(os.path.join(folder, 'model.json')) as f:
        manifest = json.load(f)['weightsManifest']
    model = ResNet20('plain').to(device)
    state = model.state_dict()
    loaded = {}
    for group in manifest:
        blob = b''
        for path in group['paths']:
            with open(os.path.join(folder, path), 'rb') as f:
                blob += f.read()
        offset = 0
        for w in group['weights']:
            if w.get('dtype', 'float32') != 'float32':
                raise SystemExit(f"--plain-from {folder}: weight {w['name']} is {w['dtype']}; expected float32 (an svd-train stock export)")
            count = int(np.prod(w['shape'])) if w['shape'] else 1
            if offset + 4 * count > len(blob):
                raise SystemExit(f"--plain-from {folder}: weight {w['name']} {w['shape']} runs past the end of its {len(blob)}-byte weight file (truncated?). Fix: export the checkpoint again")
            arr = np.frombuffer(blob, dtype='<f4', count=count, offset=offset).reshape(w['shape'])
            offset += 4 * count
            layer, field = w['name'].rsplit('/', 1)
            module = layer.replace('_', '.')
            t = torch.from_numpy(arr.copy())
            key = {'kernel': 'weight', 'gamma': 'weight', 'beta': 'bias', 'moving_mean': 'running_mean', 'moving_variance': 'running_var', 'bias': 'bias'}.get(field)
            if key is None:
                raise SystemExit(f"--plain-from {folder}: unexpected weight {w['name']}; expected a plain ResNet-20's stock export (svd-coord export --stock of a plain checkpoint)")
            if field == 'kernel':
                t = t.permute(3, 2, 0, 1) if t.dim() == 4 else t.t()
            loaded[f'{module}.{key}'] = t
    want = {k: v.shape for k, v in state.items() if not k.endswith('num_batches_tracked')}
    missing = sorted(set(want) - set(loaded))
    extra = sorted(set(loaded) - set(want))
    wrong = sorted(k for k in set(want) & set(loaded) if loaded[k].shape != want[k])
    if missing or extra or wrong:
        raise SystemExit(f'--plain-from {folder}: not a plain ResNet-20 stock export (missing {missing[:3]}, unexpected {extra[:3]}, '
                         f'wrong shape {wrong[:3]}). Fix: svd-coord export CKPT --stock --out DIR with the plain phase\'s checkpoint, without --fold-bn')
    model.load_state_dict(loaded, strict=False)
    return model.train()


def frozen(model):
    """An eval-mode copy whose parameters take no gradient: a teacher."""
    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


class Step:
    """One training step short of the optimizer: forward (in --bn-groups sub-batches), the data term
    (distilled from `teacher` with --distill-alpha), lambda_o * orth + ls * sparsity, and backward into
    the parameters' .grad.

    With --cuda-graphs on a GPU the step is captured once as a CUDA graph and replayed: ResNet-20's
    hundreds of small kernels cost their launches, not their work, when run eagerly. The graph reads
    the batch and ls from fixed tensors and writes the same .grad tensors every replay, so nothing may
    reset them to None (the optimizer's lr and momentum, which change every step, stay eager). Capture
    runs three warm-up steps on a side stream (PyTorch's recipe); the batch-norm statistics they move
    are put back. The first replay is checked against an eager step on the same batch (gradients and
    logits within 1e-3 of their largest value; the batch-norm statistics put back between them), and
    where capture fails or the check does not hold, the step says so and runs eagerly from then on.
    Not yet run on a GPU in this project: the check is what makes the first run safe."""

    def __init__(self, model, a, teacher, device):
        self.model, self.a, self.teacher = model, a, teacher
        self.graph, self.checked = None, False
        if device.type == 'cuda' and a.cuda_graphs:
            try:
                self.capture(device)
            except Exception as e:  # noqa: BLE001 - any capture failure leaves the eager step, which is correct
                self.fall_back(f'capture failed ({type(e).__name__}: {e})')

    def fall_back(self, why):
        print(f'CUDA graph step: {why}; training eagerly', flush=True)
        self.graph = None
        self.model.zero_grad(set_to_none=True)

    def loss(self, x, y, ls):
        a, model = self.a, self.model
        sub = a.batch // a.bn_groups
        logits = torch.cat([model(x[i:i + sub]) for i in range(0, a.batch, sub)])
        ce = F.cross_entropy(logits, y)
        data_term = ce
        if self.teacher is not None:
            with torch.no_grad():
                t_logits = self.teacher(x)
            data_term = (1 - a.distill_alpha) * ce + a.distill_alpha * distill_term(logits, t_logits, a.distill_temperature)
        orth, sp = regularizers(model)
        return logits, data_term + a.lambda_o * orth + ls * sp

    def snapshot(self):
        """A copy of the model's whole state (parameters and batch-norm statistics)."""
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def restore(self, saved):
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(saved[k])

    def capture(self, device):
        model = self.model
        self.x = torch.zeros(self.a.batch, 3, 32, 32, device=device)
        self.y = torch.zeros(self.a.batch, dtype=torch.long, device=device)
        self.ls = torch.zeros((), device=device)
        saved = self.snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model.zero_grad(set_to_none=True)
                self.loss(self.x, self.y, self.ls)[1].backward()
        torch.cuda.current_stream().wait_stream(side)
        model.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits, loss = self.loss(self.x, self.y, self.ls)
            loss.backward()
        self.restore(saved)
        self.graph = graph

    def eager(self, x, y, ls):
        self.model.zero_grad(set_to_none=True)
        logits, loss = self.loss(x, y, ls)
        loss.backward()
        return logits

    def check(self, x, y, ls):
        """The eager step's gradients and logits on this batch against the first replay's."""
        params = list(self.model.parameters())
        static = [p.grad for p in params]
        saved = self.snapshot()
        logits = self.eager(x, y, ls).detach().clone()
        grads = [p.grad.detach().clone() for p in params]
        for p, g in zip(params, static):
            p.grad = g
        self.restore(saved)
        self.replay(x, y, ls)
        worst = max(((p.grad - e).abs().max() / (e.abs().max() + 1e-12)).item() for p, e in zip(params, grads))
        worst = max(worst, ((self.logits - logits).abs().max() / logits.abs().max()).item())
        if not worst < 1e-3:
            self.restore(saved)
            self.fall_back(f'the first replay differs from the eager step by {worst:.2e} of the largest value (expected < 1e-3)')
            return self.eager(x, y, ls)
        print(f'CUDA graph step: replay matches the eager step (worst relative difference {worst:.1e})', flush=True)
        return self.logits

    def replay(self, x, y, ls):
        self.x.copy_(x)
        self.y.copy_(y)
        self.ls.fill_(ls)
        self.graph.replay()
        return self.logits

    def __call__(self, x, y, ls):
        """The step's logits; the gradients are in the parameters' .grad."""
        if self.graph is None:
            return self.eager(x, y, ls)
        if not self.checked:
            self.checked = True
            return self.check(x, y, ls)
        return self.replay(x, y, ls)


def train(model, a, stage, data, epochs, lr, lambda_s, ck_path, extra=None, teacher=None, average_last=0):
    """One one-cycle training stage (`stage` is 'train' or 'finetune'), resumable from `ck_path`.
    With `teacher` (an eval-mode model) the data term is distilled (--distill-alpha). Returns
    (history, sums, count): with `average_last` K, sums is the sum of the float state (parameters and
    BN statistics) at the end of each of the last K epochs, and count how many it holds (else None, 0)."""
    xtr, ytr, xte, yte = data
    gen = torch.Generator().manual_seed(a.seed + {'train': 0, 'finetune': 1, 'plain': 2}[stage])
    steps_per_epoch = xtr.shape[0] // a.batch
    total = epochs * steps_per_epoch
    opt, sched = make_optimizer(model, a, lr, epochs, steps_per_epoch)
    t0 = time.time()
    history = []
    sums, summed = None, 0
    if ck_path and os.path.exists(ck_path):
        # weights_only=False: torch 2.6+ defaults to True and refuses the optimizer and schedule state;
        # the file is one this script wrote (save_atomic below).
        ck = torch.load(ck_path, map_location=xtr.device, weights_only=False)
        keys = ('batch', 'plain_epochs', 'plain_lr', 'cutout', 'seed') if stage == 'plain' else (
            ('decomposition', 'epochs', 'batch', 'lr', 'lambda_s', 'sparsity_start', 'sparsity_end', 'plain_epochs', 'plain_from', 'distill_training')
            + (('finetune_epochs', 'finetune_lr', 'finetune_average', 'distill_alpha', 'distill_temperature') if stage == 'finetune' else ()))
        absent = {'decomposition': 'channel', 'sparsity_start': 0.0, 'sparsity_end': 1.0, 'distill_alpha': 0.0, 'distill_temperature': 4.0, 'finetune_average': 0,
                  'plain_epochs': 0, 'plain_lr': 0.1, 'plain_from': '', 'distill_training': False, 'cutout': 0, 'seed': 0}
        for k in keys:
            was, now = ck['args'].get(k, absent.get(k)), vars(a).get(k)
            if was != now:
                raise SystemExit(f'--checkpoint {ck_path}: {k} {was} there, {now} now; it is of another schedule. Fix: use another path, or the same flags')
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['opt'])
        sched.load_state_dict(ck['sched'])
        gen.set_state(ck['gen'])
        torch.set_rng_state(ck['rng'])
        history = ck['history']
        sums, summed = ck.get('avg_sums'), ck.get('avg_count', 0)
        t0 -= history[-1]['seconds'] if history else 0
        print(f'{stage}: resumed from {ck_path} after epoch {len(history)}', flush=True)
    stop = min(epochs, a.stop_after) if (a.stop_after and stage == 'train') else epochs
    run_step = Step(model, a, teacher, xtr.device) if len(history) < stop else None
    for epoch in range(len(history), stop):
        perm = torch.randperm(xtr.shape[0], generator=gen).to(xtr.device)
        # The epoch's augmentation draws, made step by step in the order augment() would, moved in one copy.
        draws = torch.stack([augment_draws(a.batch, gen, a.cutout) for _ in range(steps_per_epoch)]).to(xtr.device)
        correct = torch.zeros((), device=xtr.device)
        seen = 0
        for step in range(steps_per_epoch):
            idx = perm[step * a.batch:(step + 1) * a.batch]
            x, y = augment(xtr[idx], gen, a.cutout, draws[step]), ytr[idx]
            ls = lambda_s if a.sparsity_start * total <= epoch * steps_per_epoch + step < a.sparsity_end * total else 0.0
            logits = run_step(x, y, ls)
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == y).sum()
            seen += a.batch
        test = evaluate(model, xte, yte)
        row = {'epoch': epoch + 1, 'train_acc': correct.item() / seen, 'test_acc': test, 'seconds': time.time() - t0}
        history.append(row)
        print(f"{stage} epoch {row['epoch']}: train {row['train_acc']:.4f} test {row['test_acc']:.4f} ({row['seconds']:.0f} s)", flush=True)
        if average_last and epoch >= epochs - average_last:
            state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
            sums = state if sums is None else {k: sums[k] + v for k, v in state.items()}
            summed += 1
        if ck_path:
            save_atomic({'args': vars(a), 'model': model.state_dict(), 'opt': opt.state_dict(), 'sched': sched.state_dict(),
                         'gen': gen.get_state(), 'rng': torch.get_rng_state(), 'history': history, 'avg_sums': sums, 'avg_count': summed,
                         **(extra or {})}, ck_path)
    return history, sums, summed


def pipeline(model, a, data, device, teacher=None):
    """Prune, sweep and fine-tune `model`; `teacher` (else the trained model) teaches the fine-tuning
    when --distill-alpha is given."""
    xtr, ytr, xte, yte = data
    sizes = output_sizes(model, device)
    n = min(BN_RECALIBRATION_IMAGES, xtr.shape[0])
    # Augmented as in training (crop + flip, and Cutout with --cutout), as svd-train's recalibrateBatchNorm
    # does (its draws differ: another RNG).
    cal = augment(xtr[torch.tensor([(i * xtr.shape[0]) // n for i in range(n)], device=device)], torch.Generator().manual_seed(0), a.cutout)
    energy = a.prune_energy if a.prune_macs is None else energy_for_macs(model, sizes, a.prune_macs)

    def point(e):
        pruned, ranks = prune(model, sizes, e)
        if any(ranks[k] < m.s.shape[0] for k, m in svd_layers(model)):
            recalibrate_bn(pruned, cal)
        return pruned, ranks, {'energy': e, 'acc': evaluate(pruned, xte, yte), 'macs': macs_at(model, sizes, e)}

    trained = {'acc': evaluate(model, xte, yte), 'macs': macs_at(model, sizes, 0)}
    print(f"pipeline: trained, full rank: test {trained['acc']:.4f}, {trained['macs'] / 1e6:.2f}M MACs", flush=True)
    sweep = []
    for e in sorted(set(SWEEP) | {energy}):
        _, _, p = point(e)
        sweep.append(p)
        print(f"  e={e:g}: test {p['acc']:.4f}, {p['macs'] / 1e6:.2f}M MACs ({100 * p['macs'] / PLAIN_RESNET20_MACS:.1f}% of plain), BN re-estimated", flush=True)
    pruned, ranks, at = point(energy)
    out = {'energy': energy, 'plain_macs': PLAIN_RESNET20_MACS, 'trained': trained, 'pruned': at, 'ranks': ranks, 'sweep': sweep, 'finetuned': None}
    if a.finetune_epochs > 0:
        lr = a.finetune_lr if a.finetune_lr is not None else a.lr / 10
        ck = a.checkpoint + '.finetune' if a.checkpoint else ''
        tutor = (teacher if teacher is not None else frozen(model)) if a.distill_alpha > 0 else None
        hist, sums, summed = train(pruned, a, 'finetune', data, a.finetune_epochs, lr, 0.0, ck, extra={'ranks': ranks}, teacher=tutor, average_last=a.finetune_average)
        out['finetuned'] = {'acc': evaluate(pruned, xte, yte), 'macs': at['macs'], 'epochs': a.finetune_epochs, 'lr': lr, 'history': hist}
        if summed >= 2:
            avg = copy.deepcopy(pruned)
            avg.load_state_dict({**avg.state_dict(), **{k: v / summed for k, v in sums.items()}})
            # One pass over the training images, augmented as in training, as svd-train's average does.
            recalibrate_bn(avg, augment(xtr, torch.Generator().manual_seed(0), a.cutout))
            out['averaged'] = {'acc': evaluate(avg, xte, yte), 'macs': at['macs'], 'epochs': summed}
    for label, p in (('trained, full rank', trained), (f'pruned at e={energy:g}', at), ('fine-tuned', out['finetuned']), (f"average of last {a.finetune_average}", out.get('averaged'))):
        if p:
            print(f"  {label:24} test {100 * p['acc']:6.2f}%  {p['macs'] / 1e6:6.2f}M MACs ({100 * p['macs'] / PLAIN_RESNET20_MACS:.1f}% of plain)", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='../shared/cifar-10-batches-bin')
    ap.add_argument('--decomposition', choices=('channel', 'spatial'), default='channel', help="conv decomposition, as svd-train's --decomposition")
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--stop-after', type=int, default=0, help='stop training after this many epochs (the schedule still spans --epochs)')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--lr', type=float, default=0.1)
    ap.add_argument('--lambda-o', type=float, default=1.0)
    ap.add_argument('--lambda-s', type=float, default=0.07)
    ap.add_argument('--sparsity-start', type=float, default=0.0, help='fraction of the training steps before the sparsity term starts')
    ap.add_argument('--sparsity-end', type=float, default=1.0, help='fraction of the training steps after which the sparsity term stops')
    ap.add_argument('--no-momentum-cycle', action='store_true')
    ap.add_argument('--no-decay-s', action='store_true')
    ap.add_argument('--bn-groups', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--cutout', type=int, default=0, help="Cutout side in pixels on top of crop + flip (0: off), as svd-train's --cutout")
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--device', default='auto', help='cpu, cuda or auto (cuda when available)')
    ap.add_argument('--cuda-graphs', action='store_true', help='on a GPU, replay each stage\'s step from a CUDA graph (checked against an eager step first; not yet run on a GPU here)')
    ap.add_argument('--limit-train', type=int, default=0, help='use only the first N training images (smoke tests)')
    ap.add_argument('--limit-test', type=int, default=0, help='use only the first N test images')
    ap.add_argument('--prune-energy', type=float, default=None)
    ap.add_argument('--prune-macs', type=float, default=None)
    ap.add_argument('--finetune-epochs', type=int, default=0)
    ap.add_argument('--finetune-lr', type=float, default=None)
    ap.add_argument('--finetune-average', type=int, default=0, help="then average the fine-tuning's last K epochs (0: off), as svd-train's --finetune-average")
    ap.add_argument('--distill-alpha', type=float, default=0.0, help='fine-tuning: weight of the distillation term (the trained model teaches)')
    ap.add_argument('--distill-temperature', type=float, default=4.0)
    ap.add_argument('--plain-epochs', type=int, default=0, help='first train the plain ResNet-20 for N epochs and start from its exact SVD (svd-train\'s --plain-epochs)')
    ap.add_argument('--plain-lr', type=float, default=0.1, help='peak lr of the plain phase')
    ap.add_argument('--plain-from', default='', help='take the plain ResNet-20 from this svd-train stock export folder instead of training it')
    ap.add_argument('--distill-training', action='store_true', help='with --plain-epochs and --distill-alpha: the plain model teaches the training too')
    ap.add_argument('--checkpoint', default='', help='save model, optimizer, schedule and RNG state here after every epoch (atomically), and resume from it when it exists; the fine-tuning stage uses PATH.finetune')
    a = ap.parse_args()
    if a.prune_energy is not None and a.prune_macs is not None:
        raise SystemExit('give --prune-energy or --prune-macs, not both')
    if a.prune_energy is not None and not 0 <= a.prune_energy < 1:
        raise SystemExit(f'--prune-energy {a.prune_energy}: expected a fraction in [0, 1)')
    if not 0 <= a.sparsity_start < 1:
        raise SystemExit(f'--sparsity-start {a.sparsity_start}: expected a fraction of the schedule in [0, 1)')
    if not a.sparsity_start < a.sparsity_end <= 1:
        raise SystemExit(f'--sparsity-end {a.sparsity_end}: expected a fraction of the schedule in (--sparsity-start {a.sparsity_start}, 1]')
    if a.finetune_average and not 2 <= a.finetune_average <= a.finetune_epochs:
        raise SystemExit(f'--finetune-average {a.finetune_average}: expected 0 (off) or 2 to --finetune-epochs ({a.finetune_epochs})')
    if not 0 <= a.cutout <= 32:
        raise SystemExit(f'--cutout {a.cutout}: expected a side in pixels in [0, 32]')
    if a.plain_epochs < 0:
        raise SystemExit(f'--plain-epochs {a.plain_epochs}: expected 0 (off) or a number of epochs')
    if a.plain_from and a.plain_epochs:
        raise SystemExit('give --plain-epochs or --plain-from, not both')
    if a.distill_training and not ((a.plain_epochs > 0 or a.plain_from) and a.distill_alpha > 0):
        raise SystemExit('--distill-training needs --plain-epochs N (or --plain-from DIR) and --distill-alpha A: the plain model is the only teacher here')
    if a.batch % a.bn_groups:
        raise SystemExit(f'--bn-groups {a.bn_groups} does not divide --batch {a.batch}')
    device = torch.device('cuda' if a.device == 'auto' and torch.cuda.is_available() else ('cpu' if a.device == 'auto' else a.device))
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    print(f'torch {torch.__version__} on {device}' + ('' if device.type != 'cuda' else f" ({torch.cuda.get_device_name(device)}, "
          f"{'CUDA graphs' if a.cuda_graphs else 'eager'}, TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'})"), flush=True)
    torch.manual_seed(a.seed)
    xtr, ytr = load(a.data, [f'data_batch_{i}.bin' for i in range(1, 6)], a.limit_train)
    xte, yte = load(a.data, ['test_batch.bin'], a.limit_test)
    data = tuple(t.to(device) for t in (xtr, ytr, xte, yte))
    result = {'args': vars(a), 'device': str(device)}
    teacher = None
    if a.plain_epochs > 0 or a.plain_from:
        if a.plain_from:
            plain = load_stock_plain(a.plain_from, device)
        else:
            plain = ResNet20('plain').to(device).train()
            hist, _, _ = train(plain, a, 'plain', data, a.plain_epochs, a.plain_lr, 0.0, a.checkpoint + '.plain' if a.checkpoint else '')
            result['plain'] = hist
            if len(hist) < a.plain_epochs:
                print(json.dumps(result))
                return
        teacher = frozen(plain)
        model = decompose(plain, a.decomposition, device)
        print(f"plain ResNet-20: test {evaluate(teacher, data[2], data[3]):.4f}; its exact SVD: test {evaluate(model, data[2], data[3]):.4f}", flush=True)
    else:
        model = ResNet20('reconstruct', a.decomposition).to(device).train()
    history, _, _ = train(model, a, 'train', data, a.epochs, a.lr, a.lambda_s, a.checkpoint, teacher=teacher if a.distill_training else None)
    result['history'] = history
    if len(history) == a.epochs and (a.prune_energy is not None or a.prune_macs is not None):
        result['pipeline'] = pipeline(model, a, data, device, teacher)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
