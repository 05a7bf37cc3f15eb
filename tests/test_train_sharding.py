"""FSDP2 on CPU (gloo): sharded training equals unsharded training, checkpoints hold the full state and resume exactly,
and rank-local generation works on gathered weights. ``accelerate`` only enables FSDP on accelerators, so the worker
shards with torch's ``fully_shard`` the way accelerate's FSDP2 plugin does; the state and gathering code is the one
``detecture train`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from train_fixture import write_mosaics

TESTS = Path(__file__).parent


@pytest.mark.slow
def test_fsdp2_training_checkpoint_resume_and_gathered_generation(tmp_path):
    data = write_mosaics(tmp_path / "data", n=2, size=64)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(TESTS / "train_fsdp_worker.py"), str(data), str(tmp_path / "out")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-6000:])
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout
    saved = load_file(str(tmp_path / "out" / "checkpoints" / "step-2" / "trainable.safetensors"))
    assert any("lora_" in n for n in saved) and any("trainable_tokens_delta" in n for n in saved)
    assert all(n.startswith(("head.", "qwen_model.")) for n in saved)  # unwrapped names, no FSDP prefixes


def test_shipped_fsdp_config_shards_every_backbone_layer():
    """``configs/accelerate/fsdp.yaml`` names classes that exist in the training module (accelerate refuses unknown
    ones), and its units cover Qwen's text and vision layers and SAM3's ViT, never the trainable head."""
    from collections import Counter

    from train_fsdp_worker import fsdp_units

    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge.head import DetectureHead, HeadConfig
    from detecture.training.config import Config
    from detecture.training.model import TrainModule
    from detecture.training.trainable import apply_lora

    qwen, sam = QwenVL.tiny(0), Sam3Backbone.tiny(0)
    apply_lora(qwen, Config().lora, gradient_checkpointing=False)
    module = TrainModule(qwen, sam, DetectureHead(HeadConfig.for_backbones(qwen, sam)), Config().loss)
    units = fsdp_units(module)
    text, vision = qwen.model.config.text_config, qwen.model.config.vision_config
    assert Counter(type(u).__name__ for u in units) == {
        "Qwen3VLTextDecoderLayer": text.num_hidden_layers,
        "Qwen3VLVisionBlock": vision.depth,
        "Sam3ViTLayer": sam.model.config.vision_config.backbone_config.num_hidden_layers,
    }
    assert not any(u is module.head or module.head in list(u.modules()) for u in units)
