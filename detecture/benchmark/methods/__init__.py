"""Registry of benchmarkable methods by name; each lives in its own module, imported only when it is built."""

from __future__ import annotations

import importlib

from ...errors import InputError
from .base import Method, MethodOptions, MethodOutput

# name → (module, class). Modules are imported lazily so ``detecture bench --help`` never pulls in torch.
REGISTRY: dict[str, tuple[str, str]] = {
    "classical": ("classical", "ClassicalMethod"),
    "detecture": ("detecture_methods", "DetectureBridgeMethod"),
    "detecture-text": ("detecture_methods", "DetectureTextMethod"),
    "sam3": ("sam3", "Sam3Method"),
    "grounding-sam3": ("grounding_sam3", "GroundingSam3Method"),
    "texturesam": ("texturesam", "TextureSamMethod"),
    "sa2va": ("sa2va", "Sa2VAMethod"),
}


def build_method(name: str, options: MethodOptions) -> Method:
    """Instantiate a registered method (cheap: weights load later in :meth:`Method.load`)."""
    if name not in REGISTRY:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __package__), cls)(options)


__all__ = ["REGISTRY", "Method", "MethodOptions", "MethodOutput", "build_method"]
