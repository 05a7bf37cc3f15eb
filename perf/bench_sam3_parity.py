"""SAM3 parity at full size: Meta's ``sam3`` vs ``transformers``' ``Sam3Model`` on the tensors a Detecture head reads.

Builds Meta's full SAM3 image model (840 M parameters, random weights from its own initialisation), converts its state
dict with ``detecture convert sam3``'s mapping (every key checked), loads it into ``Sam3Model``, and compares the
tensors the head consumes (see :mod:`detecture.backbones.sam3_parity`) on one random 1008 x 1008 image and three
random Bridge outputs, fp32 on CPU. The Detecture side runs twice: with the ViT LayerNorm epsilon of Meta's
implementation (1e-5, what the converted config records) and with ``transformers``' default (1e-6).

Meta's ``sam3`` cannot live in the project's CPU-torch environment (it needs ``torchvision``, ``triton``), so this
runs in its own venv::

    python3.11 -m venv /work/venvs/sam3 && . /work/venvs/sam3/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 && pip install sam3==0.1.4 psutil transformers==5.18.0 \
        safetensors pyyaml pillow scipy && pip install --no-deps open_clip_torch   # the BPE file sam3 lacks
    PYTHONPATH=. python perf/bench_sam3_parity.py --out sam3_parity.json

Meta's builder hard-codes ``device="cuda"`` in a few factory calls; on a CPU machine they are redirected to the CPU
with a ``TorchFunctionMode``. Needs about 16 GB of RAM and a few minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch
from torch.overrides import TorchFunctionMode

from detecture.backbones.sam3 import Sam3Backbone
from detecture.backbones.sam3_convert import (convert_state_dict, find_bpe, key_layout, missing_bpe_message,
                                              target_shapes)
from detecture.backbones.sam3_parity import NAMES, compare, detecture_head_inputs, meta_head_inputs


class _CudaToCpu(TorchFunctionMode):
    """Redirect ``device="cuda"`` in factory functions to the CPU (Meta's builder hard-codes it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_meta(seed: int):
    from sam3.model_builder import build_sam3_image_model

    bpe = find_bpe()
    if bpe is None:
        raise SystemExit(missing_bpe_message())
    torch.manual_seed(seed)
    with _CudaToCpu():
        return build_sam3_image_model(bpe_path=str(bpe), device="cpu", eval_mode=True, checkpoint_path=None,
                                      load_from_HF=False, enable_segmentation=True, enable_inst_interactivity=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from transformers import Sam3Config, Sam3Model

    t0 = time.perf_counter()
    meta = build_meta(args.seed)
    params = sum(p.numel() for p in meta.parameters())
    t_build = time.perf_counter() - t0
    generator = torch.Generator().manual_seed(args.seed + 1)
    pixels = torch.rand(1, 3, 1008, 1008, generator=generator) * 2 - 1  # already normalised: mean = std = 0.5
    bridge = torch.randn(args.prompts, 1024, generator=generator)

    t0 = time.perf_counter()
    theirs = meta_head_inputs(meta, pixels, bridge)
    t_meta = time.perf_counter() - t0
    config = Sam3Config()
    converted = convert_state_dict(meta.state_dict(), target_shapes(config))
    del meta
    gc.collect()

    config.vision_config.backbone_config.layer_norm_eps = float(key_layout()["vit_layer_norm_eps"])
    model = Sam3Model(config).eval()
    model.load_state_dict(converted.state_dict, strict=True)
    del converted
    backbone = Sam3Backbone(model=model, name="converted")
    results = {"params": params, "build_s": round(t_build, 1), "meta_forward_s": round(t_meta, 1), "runs": {}}
    for label, eps in (("meta_eps_1e-5", 1e-5), ("transformers_default_eps_1e-6", 1e-6)):
        backbone.set_vit_layer_norm_eps(eps)
        t0 = time.perf_counter()
        ours = detecture_head_inputs(backbone, pixels, bridge)
        results["runs"][label] = {"forward_s": round(time.perf_counter() - t0, 1), "tensors": compare(ours, theirs)}
        del ours
        gc.collect()

    print(f"Meta SAM3: {params / 1e6:.1f} M parameters, built in {t_build:.1f} s, head inputs in {t_meta:.1f} s")
    print("| tensor | shape | max abs (Meta) | " + " | ".join(f"max abs diff, {k}" for k in results["runs"]) + " |")
    for name in NAMES:
        run0 = next(iter(results["runs"].values()))["tensors"][name]
        diffs = " | ".join(f"{r['tensors'][name]['max_abs_diff']:.2e}" for r in results["runs"].values())
        print(f"| {name} | {tuple(theirs[name].shape)} | {run0['max_abs']:.3g} | {diffs} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
