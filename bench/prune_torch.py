"""PyTorch baseline for `pnpm bench prune --torch`: does PyTorch get more out of the same ranks?

Times, in one process, ResNet-20 (channel decomposition) at full rank against the same model with
the given per-layer ranks, each SVD layer in its cheaper form by MACs (merged conv, or the k x k conv
to r channels then the 1 x 1 conv), as svd-train runs them. One training step (forward, CE + SVD
regularizers, backward) and inference (eval mode, no autograd), median of --reps interleaved rounds
after --warmup rounds.

Usage: python3 bench/prune_torch.py --ranks '{"stem.0": 3, ...}' [--batch 64] [--infer-batch 256]
[--reps 5] [--warmup 2] [--threads 1]. Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_malloc import keep_freed_memory  # noqa: E402

if __name__ == '__main__':
    keep_freed_memory()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from train_step_torch import SVDConv, SVDDense, ResNet20, blas_in_use, step  # noqa: E402


def truncate(model, ranks):
    """Keeps the first r singular triplets of every SVD layer named in `ranks` (module names, the
    same in svd-train and here: 'layers.3.conv1'), and picks each conv's cheaper form by MACs."""
    for name, m in model.named_modules():
        if not isinstance(m, (SVDConv, SVDDense)):
            continue
        r = ranks.get(name, m.s.shape[0])
        with torch.no_grad():
            m.U = nn.Parameter(m.U[:, :r].contiguous())
            m.s = nn.Parameter(m.s[:r].contiguous())
            m.V = nn.Parameter(m.V[:, :r].contiguous())
        if isinstance(m, SVDConv):
            merged = m.k * m.k * m.cin * m.cout
            factored = r * (m.k * m.k * m.cin + m.cout)
            m.mode = 'reconstruct' if merged <= factored else 'factored'
    return model


def infer(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ranks', required=True, help='JSON object: module name -> rank')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--infer-batch', type=int, default=256)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ranks = json.loads(a.ranks)
    models = {'full rank': truncate(ResNet20('reconstruct'), {}), 'pruned': truncate(ResNet20('reconstruct'), ranks)}
    x, y = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))
    xi = torch.randn(a.infer_batch, 3, 32, 32)
    jobs = {}
    for name, m in models.items():
        jobs[(name, 'train')] = lambda m=m: step(m.train(), x, y)
        jobs[(name, 'infer')] = lambda m=m: infer(m.eval(), xi)
    for _ in range(a.warmup):
        for f in jobs.values():
            f()
    ts = {k: [] for k in jobs}
    for _ in range(a.reps):
        for k, f in jobs.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    out = {name: {'train_img_per_s': a.batch / statistics.median(ts[(name, 'train')]),
                  'infer_img_per_s': a.infer_batch / statistics.median(ts[(name, 'infer')])} for name in models}
    print(json.dumps({'threads': torch.get_num_threads(), 'torch': torch.__version__, 'blas': blas_in_use(), 'results': out}))


if __name__ == '__main__':
    main()
