"""The models each benchmark method reads, by ``--model`` key, and the methods ``--tiny`` swaps to tiny random ones: a
module of its own, free of the methods' imports, so that ``detecture bench --help`` words its model options from it
without loading numpy, and the command refuses what --tiny would leave unread before any method is built."""

from __future__ import annotations

from typing import Sequence

# name → the ``--model KEY=ID`` keys the method reads; a key no method reads is refused (methods.check_model_keys).
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "classical": (),
    "detecture": ("qwen", "sam3"),
    "detecture-text": ("qwen", "sam3"),
    "sam3": ("sam3",),
    "grounding-sam3": ("grounding-dino", "sam3"),
    "texturesam": ("texturesam",),
    "sa2va": ("sa2va",),
}

# The methods whose backbones --tiny swaps for tiny random ones, built on the CPU from the seed: they read neither
# their models' ids nor --device then (the other methods load their models as without --tiny).
TINY_METHODS: tuple[str, ...] = ("detecture", "detecture-text", "sam3")


def tiny_leaves_unread(key: str | None, methods: Sequence[str]) -> bool:
    """Whether --tiny leaves the model of ``key`` unread by ``methods`` (``None``: the device their models load on,
    which every method that loads a model reads): some of them read it and every one that does is a
    :data:`TINY_METHODS` one. A model no selected method reads is not --tiny's doing (methods.check_model_keys warns
    about it)."""
    reading = [name for name in methods if MODEL_KEYS.get(name) and (key is None or key in MODEL_KEYS[name])]
    return bool(reading) and all(name in TINY_METHODS for name in reading)


def readers(key: str) -> list[str]:
    """The methods that read the model of ``key``, in :data:`MODEL_KEYS`' order."""
    return [name for name, keys in MODEL_KEYS.items() if key in keys]
