"""Loads an svd-train plain ResNet-20's stock export with bench/torch_train.py's load_stock_plain,
and decomposes it as torch_train.py --plain-from / --plain-epochs do (channel and spatial), for the
test that checks both against tfjs' logits (packages/layers/src/export-torch.test.ts).

Usage: /usr/bin/python3 bench/check_torch_plain.py DIR X.f32 N OUT.f32. X holds N NHWC 32x32x3 images
(float32); OUT gets the eval-mode logits of the plain model, its channel SVD and its spatial SVD,
N x 10 each, one after the other.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import decompose, load_stock_plain  # noqa: E402

folder, xpath, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x = torch.from_numpy(np.fromfile(xpath, dtype='<f4').reshape(n, 32, 32, 3)).permute(0, 3, 1, 2).contiguous()
plain = load_stock_plain(folder, 'cpu').eval()
with torch.no_grad():
    logits = [plain(x)] + [decompose(plain, d, 'cpu').eval()(x) for d in ('channel', 'spatial')]
np.concatenate([t.numpy().astype('<f4').ravel() for t in logits]).tofile(out)
