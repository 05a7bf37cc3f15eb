"""Shared fixtures: tiny backbones of the real classes (built once per session) and real photos from skimage."""

from __future__ import annotations

import gc
import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests must never reach for the hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def pytest_unconfigure(config):
    """The session is over: freeze the garbage collector, so that the interpreter's exit does not walk the millions of
    objects torch, transformers and gradio left alive (seconds of CPU, here and in the pytest runs some tests start)."""
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory):
    """Temporary files go under pytest's own folder, in this process and in the subprocesses it starts.

    Some library code leaves its temporary folders behind (Gradio's client one per download, torch's launcher and
    multiprocessing when a test kills their processes); a session's folder is removed with pytest's old ones instead
    of collecting in the machine's temporary folder run after run."""
    folder = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        patch.setattr(tempfile, "tempdir", str(folder))
        yield


@pytest.fixture(scope="session")
def tiny_pipeline():
    from detecture.pipeline import DetecturePipeline

    return DetecturePipeline.tiny(seed=0)


@pytest.fixture(scope="session")
def texture_photos() -> dict[str, np.ndarray]:
    """Real CC0 texture photos (512 x 512, greyscale) as RGB arrays."""
    from skimage import data

    return {name: np.repeat(getattr(data, name)()[:, :, None], 3, axis=2) for name in ("brick", "grass", "gravel")}


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Tiny Qwen3-VL and SAM3 saved as local model folders, to exercise the real ``from_pretrained`` loaders."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone

    root = tmp_path_factory.mktemp("models")
    qwen, sam = QwenVL.tiny(), Sam3Backbone.tiny()
    qwen.model.save_pretrained(root / "qwen")
    qwen.tokenizer.save_pretrained(root / "qwen")
    qwen.image_processor.save_pretrained(root / "qwen")
    sam.model.save_pretrained(root / "sam3")
    sam.tokenizer.save_pretrained(root / "sam3")
    return root / "qwen", root / "sam3"
