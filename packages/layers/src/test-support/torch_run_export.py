"""Runs a stock tfjs-layers export (model.json + weights.bin, as `svd-coord export --stock` writes it)
in PyTorch, with none of svd-train's code: an independent check that the export means what tfjs
computes. Reads the layer graph generically (InputLayer, ZeroPadding2D, Conv2D, BatchNormalization,
ReLU, Add, GlobalAveragePooling2D, Dense); any other class is an error.

usage: python3 packages/layers/src/test-support/torch_run_export.py MODEL_DIR INPUT.f32 N OUTPUT.f32
INPUT.f32: N NHWC images (float32, little-endian); OUTPUT.f32: the N x classes logits.
"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F


def main():
    model_dir, input_path, n, output_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(f"{model_dir}/model.json") as f:
        art = json.load(f)
    topo = art["modelTopology"]
    cfg = topo["model_config"]["config"] if "model_config" in topo else topo["config"]
    specs = [w for group in art["weightsManifest"] for w in group["weights"]]
    blob = np.fromfile(f"{model_dir}/weights.bin", dtype="<f4")
    weights, off = {}, 0
    for w in specs:
        if w.get("dtype", "float32") != "float32":
            raise SystemExit(f"weight {w['name']}: dtype {w['dtype']}; expected float32")
        size = int(np.prod(w["shape"])) if w["shape"] else 1
        weights[w["name"]] = torch.from_numpy(blob[off:off + size].reshape(w["shape"]).copy())
        off += size
    if off != blob.size:
        raise SystemExit(f"weights.bin holds {blob.size} floats; the manifest names {off}")

    def weight(layer, suffix):
        return weights[f"{layer}/{suffix}"]

    x_in = np.fromfile(input_path, dtype="<f4")
    h, w_, c = cfg["layers"][0]["config"]["batch_input_shape"][1:]
    x_in = torch.from_numpy(x_in.reshape(n, h, w_, c).copy()).permute(0, 3, 1, 2)  # NCHW
    values = {}
    for layer in cfg["layers"]:
        name, cls, lc = layer["name"], layer["class_name"], layer["config"]
        ins = [values[ref[0]] for node in layer.get("inbound_nodes", []) for ref in node]
        if cls == "InputLayer":
            y = x_in
        elif cls == "ZeroPadding2D":
            (top, bottom), (left, right) = lc["padding"]
            y = F.pad(ins[0], (left, right, top, bottom))
        elif cls == "Conv2D":
            kh, kw = lc["kernel_size"]
            # 'same' at stride 1 with odd kernels pads (k - 1) / 2 on each side, as PyTorch's padding does.
            same_ok = lc["padding"] == "same" and list(lc["strides"]) == [1, 1] and kh % 2 == 1 and kw % 2 == 1
            if (lc["padding"] != "valid" and not same_ok) or lc.get("dilation_rate", [1, 1]) != [1, 1] or lc.get("activation", "linear") != "linear":
                raise SystemExit(f"{name}: only 'valid' (or stride-1 'same' with odd kernels), undilated, linear convs are read here")
            k = weight(name, "kernel").permute(3, 2, 0, 1)  # HWIO -> OIHW
            b = weight(name, "bias") if lc["use_bias"] else None
            y = F.conv2d(ins[0], k, b, stride=tuple(lc["strides"]), padding=(kh // 2, kw // 2) if same_ok else 0)
        elif cls == "BatchNormalization":
            y = F.batch_norm(ins[0], weight(name, "moving_mean"), weight(name, "moving_variance"),
                             weight(name, "gamma"), weight(name, "beta"), False, 0.0, lc["epsilon"])
        elif cls == "ReLU":
            y = F.relu(ins[0])
        elif cls == "Add":
            y = ins[0]
            for t in ins[1:]:
                y = y + t
        elif cls == "GlobalAveragePooling2D":
            y = ins[0].mean(dim=(2, 3))
        elif cls == "Dense":
            y = ins[0] @ weight(name, "kernel")
            if lc["use_bias"]:
                y = y + weight(name, "bias")
        else:
            raise SystemExit(f"{name}: layer class {cls} is not read here")
        values[name] = y
    out = values[cfg["output_layers"][0][0]]
    out.detach().numpy().astype("<f4").tofile(output_path)
    print(json.dumps({"n": n, "classes": int(out.shape[1]), "layers": len(cfg["layers"])}))


if __name__ == "__main__":
    with torch.no_grad():
        main()
