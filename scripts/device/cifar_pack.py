#!/usr/bin/env python3
"""CIFAR-10's binary batches, packed small enough to travel to a device machine, and back.

The device tool carries at most 64 MiB a call and the batches are 184 MB, so they go over in two
calls (`pack ... --parts 2`, then one part per call). Lossless: each image's planes become G, R-G,
B-G (mod 256), each plane the residual of the LOCO-I median predictor (mod 256), all stored planar
and xz-compressed: about 55% of the raw size. `unpack` rebuilds the batch files and checks each
against the MD5SUMS packed beside them, so a part that arrived damaged is an error, not bad data.

  python3 scripts/device/cifar_pack.py pack ../shared/cifar-10-batches-bin .device --parts 2
  python3 scripts/device/cifar_pack.py unpack .device/part1 /root/cifar    # on the device machine
"""
import argparse
import hashlib
import lzma
import os
import sys

import numpy as np

REC = 3073  # one label byte, then 1024 bytes each of R, G, B
FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin', 'test_batch.bin']
EXTRA = ['batches.meta.txt', 'MD5SUMS']


def med_predict(p):
    """LOCO-I's median predictor of every pixel of planes p [n, 32, 32] (uint8) from its causal
    neighbours a (left), b (above), c (above-left), outside the image read as 0."""
    q = np.pad(p.astype(np.int16), ((0, 0), (1, 0), (1, 0)))
    a, b, c = q[:, 1:, :-1], q[:, :-1, 1:], q[:, :-1, :-1]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def encode(raw):
    recs = np.frombuffer(raw, np.uint8).reshape(-1, REC)
    labels = recs[:, 0].copy()
    rgb = recs[:, 1:].reshape(-1, 3, 32, 32)
    r, g, b = (rgb[:, i].astype(np.int16) for i in range(3))
    planes = [g.astype(np.uint8), ((r - g) % 256).astype(np.uint8), ((b - g) % 256).astype(np.uint8)]
    res = [((pl.astype(np.int16) - med_predict(pl)) % 256).astype(np.uint8) for pl in planes]
    body = labels.tobytes() + b''.join(x.tobytes() for x in res)
    return lzma.compress(body, preset=9 | lzma.PRESET_EXTREME)


def decode(blob):
    body = lzma.decompress(blob)
    n = len(body) // (REC)
    if n * REC != len(body):
        raise ValueError(f'packed body of {len(body)} bytes is not a whole number of {REC}-byte records')
    labels = np.frombuffer(body[:n], np.uint8)
    res = np.frombuffer(body[n:], np.uint8).reshape(3, n, 32, 32).astype(np.int16)
    planes = []
    for k in range(3):
        # Row by row, pixel by pixel, across all images at once: each prediction needs the pixels
        # already decoded to its left and above.
        q = np.zeros((n, 33, 33), np.int16)
        for y in range(32):
            for x in range(32):
                a, b_, c = q[:, y + 1, x], q[:, y, x + 1], q[:, y, x]
                lo, hi = np.minimum(a, b_), np.maximum(a, b_)
                pred = np.where(c >= hi, lo, np.where(c <= lo, hi, a + b_ - c))
                q[:, y + 1, x + 1] = (res[k, :, y, x] + pred) % 256
        planes.append(q[:, 1:, 1:])
    g, dr, db = planes
    r, b = (dr + g) % 256, (db + g) % 256
    out = np.empty((n, REC), np.uint8)
    out[:, 0] = labels
    out[:, 1:] = np.stack([r, g, b], 1).reshape(n, 3072).astype(np.uint8)
    return out.tobytes()


def md5sums(path):
    sums = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                digest, name = line.split()
                sums[name] = digest
    return sums


def pack(src, out, parts):
    sizes = []
    for i, chunk in enumerate(np.array_split(np.array(FILES), parts), 1):
        d = os.path.join(out, f'part{i}')
        os.makedirs(d, exist_ok=True)
        for name in chunk:
            with open(os.path.join(src, name), 'rb') as f:
                blob = encode(f.read())
            with open(os.path.join(d, name + '.xz'), 'wb') as f:
                f.write(blob)
            sizes.append(len(blob))
            print(f'{d}/{name}.xz: {len(blob) / 2**20:.1f} MiB', flush=True)
        for name in EXTRA:
            with open(os.path.join(src, name), 'rb') as f, open(os.path.join(d, name), 'wb') as g:
                g.write(f.read())
    print(f'{sum(sizes) / 2**20:.1f} MiB in {parts} parts')


def unpack(parts, dest):
    os.makedirs(dest, exist_ok=True)
    for d in parts:
        sums = md5sums(os.path.join(d, 'MD5SUMS'))
        for name in sorted(os.listdir(d)):
            if not name.endswith('.xz'):
                continue
            target = name[:-3]
            with open(os.path.join(d, name), 'rb') as f:
                raw = decode(f.read())
            got = hashlib.md5(raw).hexdigest()
            if sums.get(target) != got:
                sys.exit(f'{d}/{name}: md5 {got} after unpacking, expected {sums.get(target)} (MD5SUMS); pack it again')
            with open(os.path.join(dest, target), 'wb') as f:
                f.write(raw)
            print(f'{dest}/{target}: md5 ok', flush=True)
        with open(os.path.join(d, 'batches.meta.txt'), 'rb') as f, open(os.path.join(dest, 'batches.meta.txt'), 'wb') as g:
            g.write(f.read())


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('pack', help='SRC (the batches) -> OUT/part1 ... OUT/partN')
    p.add_argument('src')
    p.add_argument('out')
    p.add_argument('--parts', type=int, default=2)
    u = sub.add_parser('unpack', help='PART ... DEST: rebuild and md5-check the batch files')
    u.add_argument('parts', nargs='+')
    u.add_argument('dest')
    a = ap.parse_args()
    pack(a.src, a.out, a.parts) if a.cmd == 'pack' else unpack(a.parts, a.dest)
