"""PyTorch baseline for `pnpm bench train-step`: times one full training step (forward, CE + SVD
regularizers, backward) of ResNet-20 plain / SVD reconstruct / SVD factored (channel
decomposition, full rank), the same models bench/train-step.ts times in TensorFlow.js.

Usage: python3 bench/train_step_torch.py --batches 32,128 --reps 5 --warmup 2 --threads 1|0
(--threads 0 keeps PyTorch's default). Prints one JSON object: {"threads": n, "results": [...]}.
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
import torch.nn.functional as F  # noqa: E402


class SVDConv(nn.Module):
    """Conv whose weight is U diag(s) V^T. Channel decomposition: U n x r, V (c*kh*kw) x r,
    W[ni,ci,i,j] = M[ni, (ci*kh + i)*kw + j]. Spatial: U (n*kw) x r, V (c*kh) x r,
    W[ni,ci,i,j] = M[ni*kw + j, ci*kh + i], factored as a kh x 1 conv to r channels, then a 1 x kw
    conv (svd-train's layout; ../shared/reference/README.md). A 1 x 1 conv is the same in both."""

    def __init__(self, cin, cout, k, stride, pad, mode, decomp='channel'):
        super().__init__()
        self.cin, self.cout, self.k, self.stride, self.pad, self.mode = cin, cout, k, stride, pad, mode
        self.decomp = decomp if k > 1 else 'channel'
        w = torch.randn(cout, cin, k, k) * (2.0 / (cin * k * k)) ** 0.5
        u, s, vh = torch.linalg.svd(self.to_matrix(w), full_matrices=False)
        self.U = nn.Parameter(u.contiguous())
        self.s = nn.Parameter(s.contiguous())
        self.V = nn.Parameter(vh.t().contiguous())

    def to_matrix(self, w):
        """The decomposed matrix M of a (n, c, k, k) weight."""
        if self.decomp == 'spatial':
            return w.permute(0, 3, 1, 2).reshape(self.cout * self.k, self.cin * self.k)
        return w.reshape(self.cout, -1)

    def weight(self):
        m = (self.U * self.s) @ self.V.t()
        if self.decomp == 'spatial':
            return m.reshape(self.cout, self.k, self.cin, self.k).permute(0, 2, 3, 1)
        return m.reshape(self.cout, self.cin, self.k, self.k)

    def costs(self, r, in_w, out_h, out_w):
        """MACs per image of the merged and the factored forward at rank r, as svd-train's
        svdConvForwardCost (the spatial form's first conv keeps the input's width)."""
        merged = out_h * out_w * self.cout * self.cin * self.k * self.k
        if self.decomp == 'spatial':
            return merged, out_h * in_w * r * self.cin * self.k + out_h * out_w * r * self.cout * self.k
        return merged, out_h * out_w * r * (self.cin * self.k * self.k + self.cout)

    def forward(self, x):
        r = self.s.shape[0]
        if self.mode == 'factored':
            if self.decomp == 'spatial':
                w1 = (self.V * self.s).t().reshape(r, self.cin, self.k, 1)
                y = F.conv2d(x, w1, stride=(self.stride, 1), padding=(self.pad, 0))
                w2 = self.U.reshape(self.cout, self.k, r).permute(0, 2, 1).reshape(self.cout, r, 1, self.k)
                return F.conv2d(y, w2, stride=(1, self.stride), padding=(0, self.pad))
            w1 = (self.V * self.s).t().reshape(r, self.cin, self.k, self.k)
            y = F.conv2d(x, w1, stride=self.stride, padding=self.pad)
            return F.conv2d(y, self.U.reshape(self.cout, r, 1, 1))
        return F.conv2d(x, self.weight(), stride=self.stride, padding=self.pad)


class SVDDense(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        w = torch.randn(fout, fin) * (2.0 / fin) ** 0.5
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        self.U = nn.Parameter(u.contiguous())
        self.s = nn.Parameter(s.contiguous())
        self.V = nn.Parameter(vh.t().contiguous())
        self.bias = nn.Parameter(torch.zeros(fout))

    def forward(self, x):
        return x @ (self.V * self.s) @ self.U.t() + self.bias


def conv(cin, cout, k, stride, pad, mode, decomp='channel'):
    if mode == 'plain':
        return nn.Conv2d(cin, cout, k, stride, pad, bias=False)
    return SVDConv(cin, cout, k, stride, pad, mode, decomp)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, mode, decomp='channel'):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride, 1, mode, decomp), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3, 1, 1, mode, decomp), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, 0, mode, decomp), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, mode, decomp='channel'):
        super().__init__()
        self.stem = nn.Sequential(conv(3, 16, 3, 1, 1, mode, decomp), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for w, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                layers.append(Block(cin, w, stride if b == 0 else 1, mode, decomp))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, 10) if mode == 'plain' else SVDDense(64, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def regularizers(model):
    dev = next(model.parameters()).device
    orth = torch.zeros((), device=dev)
    sparsity = torch.zeros((), device=dev)
    for m in model.modules():
        if isinstance(m, (SVDConv, SVDDense)):
            r = m.s.shape[0]
            eye = torch.eye(r, device=dev)
            eu = m.U.t() @ m.U - eye
            ev = m.V.t() @ m.V - eye
            orth = orth + ((eu ** 2).sum() + (ev ** 2).sum()) / r ** 2
            sparsity = sparsity + m.s.abs().sum() / m.s.norm()
    return orth, sparsity


def step(model, x, y):
    model.zero_grad(set_to_none=True)
    ce = F.cross_entropy(model(x), y)
    orth, sp = regularizers(model)
    loss = ce + 1.0 * orth + 0.07 * sp
    loss.backward()
    return loss.item()


def blas_in_use():
    """The BLAS library this process actually mapped (Debian's libblas.so.3 is an alternatives link:
    the slow reference BLAS unless libopenblas0-openmp is installed)."""
    import os
    names = set()
    with open('/proc/self/maps') as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ''
            if 'blas' in os.path.basename(path):
                names.add(os.path.realpath(path))
    return ', '.join(sorted(names)) or 'none mapped'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batches', default='32,128')
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    results = []
    for mode, name in (('plain', 'plain'), ('reconstruct', 'svd reconstruct'), ('factored', 'svd factored')):
        model = ResNet20(mode).train()
        for batch in [int(b) for b in a.batches.split(',')]:
            x = torch.randn(batch, 3, 32, 32)
            y = torch.randint(0, 10, (batch,))
            for _ in range(a.warmup):
                step(model, x, y)
            ts = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                step(model, x, y)
                ts.append(time.perf_counter() - t0)
            med = statistics.median(ts)
            results.append({'model': name, 'batch': batch, 'median_s': med, 'img_per_s': batch / med})
    print(json.dumps({'threads': torch.get_num_threads(), 'torch': torch.__version__, 'blas': blas_in_use(), 'results': results}))


if __name__ == '__main__':
    main()
