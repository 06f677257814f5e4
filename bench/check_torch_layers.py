"""Checks bench/train_step_torch.py's SVDConv (the layer bench/torch_train.py trains) against the
PyTorch reference cases in ../shared/reference/layers.json: for every conv case, channel and
spatial, the merged weight and the output of both forms (merged and factored). Also prints the
layer's MAC counts, for the test to compare with svd-train's svdConvForwardCost.

Usage: /usr/bin/python3 bench/check_torch_layers.py [layers.json]. Prints one JSON line; exits 1
when an error exceeds 1e-5.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_torch import SVDConv  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference', 'layers.json')
out, worst = [], 0.0
for c in json.load(open(path)):
    cfg = c['config']
    if cfg.get('type') != 'conv2d':
        continue

    def tensor(key):
        return torch.tensor(c[key]['data'], dtype=torch.float32).reshape(c[key]['shape'])

    w, x, y = tensor('weight'), tensor('x'), tensor('y')
    n, ci, k = w.shape[0], w.shape[1], w.shape[2]
    row = {'name': c['name'], 'decomposition': cfg['decomposition'], 'n': n, 'c': ci, 'k': k, 'rank': cfg['rank']}
    for mode in ('reconstruct', 'factored'):
        m = SVDConv(ci, n, k, cfg['stride'][0], cfg['padding'][0], mode, cfg['decomposition'])
        with torch.no_grad():
            m.U.copy_(tensor('U'))
            m.s.copy_(tensor('s'))
            m.V.copy_(tensor('V'))
            row[f'{mode}_weight_err'] = (m.weight() - w).abs().max().item()
            row[f'{mode}_y_err'] = (m(x) - y).abs().max().item()
        worst = max(worst, row[f'{mode}_weight_err'], row[f'{mode}_y_err'])
    in_w, out_h, out_w = x.shape[3], y.shape[2], y.shape[3]
    row['in_w'], row['out_h'], row['out_w'] = in_w, out_h, out_w
    row['macs_merged'], row['macs_factored'] = m.costs(cfg['rank'], in_w, out_h, out_w)
    out.append(row)
print(json.dumps({'cases': out, 'worst': worst}))
sys.exit(0 if out and worst <= 1e-5 else 1)
