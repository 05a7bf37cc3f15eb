"""QLoRA-style training: a 4-bit (bitsandbytes NF4) frozen Qwen with LoRA + SEG rows on top, through the real loaders.

bitsandbytes runs its 4-bit kernels on CPU too, so this is the same path a 24 GB GPU run takes, at tiny size.
"""

import csv
import math
from pathlib import Path

import pytest

from train_fixture import write_mosaics

bnb = pytest.importorskip("bitsandbytes")


def test_4bit_qwen_loads_quantized(tiny_model_dirs):
    from detecture.backbones.qwen import QwenVL

    qwen = QwenVL.from_pretrained(tiny_model_dirs[0], device="cpu", quantization="4bit")
    q_proj = qwen.model.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)


def test_stage2_steps_on_a_4bit_qwen(tiny_model_dirs, tmp_path):
    from detecture.cli import main

    data = write_mosaics(tmp_path / "data", n=4, size=64)
    qwen_dir, sam3_dir = tiny_model_dirs
    sets = {"model.qwen": qwen_dir, "model.sam3": sam3_dir, "model.quantization": "4bit", "optim.stage1_epochs": 0,
            "optim.batch_size": 1, "optim.grad_accum": 1, "optim.warmup_epochs": 0, "train.eval_every_epochs": 0,
            "train.emission_every_steps": 0}
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "3"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    with open(Path(tmp_path / "run" / "train_log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["stage"] == "2" for r in rows)
    for row in rows:  # stage 2 on the quantized base: LM and mask terms both present and finite
        assert math.isfinite(float(row["lm"])) and math.isfinite(float(row["mask_ce"])) and row["skipped"] == "0"
        assert float(row["lr_lora"]) > 0
