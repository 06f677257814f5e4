"""PyTorch reference training run of the README recipe, to compare svd-train's accuracy against.

SVD-ResNet-20 (channel decomposition), CE + lambda_o * orth + lambda_s * Hoyer, SGD Nesterov
momentum 0.9, one-cycle lr peaking at 0.1, weight decay 5e-4, batch 128, crop + flip, on the real
CIFAR-10 binary batches. The switches reproduce svd-train's choices one at a time, so that an
accuracy gap can be traced to a choice rather than guessed at:

  --no-momentum-cycle   constant momentum (PyTorch's OneCycleLR cycles it 0.95 -> 0.85 -> 0.95)
  --no-decay-s          no weight decay on singular values, BN parameters and biases
  --bn-groups G         batch norm over G sub-batches of 128/G (svd-train: one group per worker)

Usage: /usr/bin/python3 bench/torch_train.py --data ../shared/cifar-10-batches-bin --epochs 1
Prints one line per epoch (train and test accuracy, seconds) and a final JSON line.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from train_step_torch import ResNet20, SVDConv, SVDDense, regularizers

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)


def load(data, names):
    raw = np.concatenate([np.fromfile(os.path.join(data, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy((x - MEAN) / STD), torch.from_numpy(raw[:, 0].astype(np.int64))


def augment(x, gen):
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        img = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = img.flip(2) if flip[i] else img
    return out


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='../shared/cifar-10-batches-bin')
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--stop-after', type=int, default=0, help='stop after this many epochs (the schedule still spans --epochs)')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--lr', type=float, default=0.1)
    ap.add_argument('--lambda-o', type=float, default=1.0)
    ap.add_argument('--lambda-s', type=float, default=0.07)
    ap.add_argument('--no-momentum-cycle', action='store_true')
    ap.add_argument('--no-decay-s', action='store_true')
    ap.add_argument('--bn-groups', type=int, default=1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--checkpoint', default='', help='save model, optimizer, schedule and RNG state here after every epoch (atomically), and resume from it when it exists')
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, ytr = load(a.data, [f'data_batch_{i}.bin' for i in range(1, 6)])
    xte, yte = load(a.data, ['test_batch.bin'])
    model = ResNet20('reconstruct').train()
    no_decay = set()
    if a.no_decay_s:
        for m in model.modules():
            if isinstance(m, (SVDConv, SVDDense)):
                no_decay.add(id(m.s))
            if isinstance(m, torch.nn.BatchNorm2d):
                no_decay.update((id(m.weight), id(m.bias)))
            if isinstance(m, SVDDense):
                no_decay.add(id(m.bias))
    params = list(model.parameters())
    groups = [
        {'params': [p for p in params if id(p) not in no_decay], 'weight_decay': 5e-4},
        {'params': [p for p in params if id(p) in no_decay], 'weight_decay': 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=a.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = xtr.shape[0] // a.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch, cycle_momentum=not a.no_momentum_cycle)
    t0 = time.time()
    history = []
    first = 0
    if a.checkpoint and os.path.exists(a.checkpoint):
        ck = torch.load(a.checkpoint)
        if ck['args']['epochs'] != a.epochs or ck['args']['batch'] != a.batch or ck['args']['lr'] != a.lr:
            raise SystemExit(f"--checkpoint {a.checkpoint} is of another schedule ({ck['args']}); use another path")
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['opt'])
        sched.load_state_dict(ck['sched'])
        gen.set_state(ck['gen'])
        torch.set_rng_state(ck['rng'])
        history = ck['history']
        first = len(history)
        t0 -= history[-1]['seconds'] if history else 0
        print(f'resumed from {a.checkpoint} after epoch {first}', flush=True)
    for epoch in range(first, a.stop_after or a.epochs):
        perm = torch.randperm(xtr.shape[0], generator=gen)
        correct = seen = 0
        for step in range(steps_per_epoch):
            idx = perm[step * a.batch:(step + 1) * a.batch]
            x, y = augment(xtr[idx], gen), ytr[idx]
            opt.zero_grad(set_to_none=True)
            sub = a.batch // a.bn_groups
            logits = torch.cat([model(x[i:i + sub]) for i in range(0, a.batch, sub)])
            ce = F.cross_entropy(logits, y)
            orth, sp = regularizers(model)
            (ce + a.lambda_o * orth + a.lambda_s * sp).backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == y).sum().item()
            seen += a.batch
        test = evaluate(model, xte, yte)
        row = {'epoch': epoch + 1, 'train_acc': correct / seen, 'test_acc': test, 'seconds': time.time() - t0}
        history.append(row)
        print(f"epoch {row['epoch']}: train {row['train_acc']:.4f} test {row['test_acc']:.4f} ({row['seconds']:.0f} s)", flush=True)
        if a.checkpoint:
            tmp = a.checkpoint + '.tmp'
            torch.save({'args': vars(a), 'model': model.state_dict(), 'opt': opt.state_dict(), 'sched': sched.state_dict(),
                        'gen': gen.get_state(), 'rng': torch.get_rng_state(), 'history': history}, tmp)
            os.replace(tmp, a.checkpoint)
    print(json.dumps({'args': vars(a), 'history': history}))


if __name__ == '__main__':
    main()
