"""The models each benchmark method reads, by ``--model`` key: a module of its own, free of the methods' imports, so
that ``detecture bench --help`` words its model options from it without loading numpy."""

from __future__ import annotations

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


def readers(key: str) -> list[str]:
    """The methods that read the model of ``key``, in :data:`MODEL_KEYS`' order."""
    return [name for name, keys in MODEL_KEYS.items() if key in keys]
