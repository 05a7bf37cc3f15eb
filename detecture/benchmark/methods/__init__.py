"""Registry of benchmarkable methods by name; each lives in its own module, imported only when it is built."""

from __future__ import annotations

import importlib

from ...errors import InputError, NotServed
from ..model_keys import MODEL_KEYS, readers
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


# The model keys with an option of their own on the command line, the name every command gives that model
# (``--model qwen=`` and ``sam3=`` are accepted for them too).
OWN_OPTIONS = {"qwen": "--qwen", "sam3": "--sam3"}


def model_option(key: str) -> str:
    """How the command line names the model of ``key``: ``--qwen``, or ``--model grounding-dino``."""
    return OWN_OPTIONS.get(key, f"--model {key}")


# The methods that score in worker processes under ``bench --workers N``: CPU-bound, one thread each, with no weights
# to copy into every worker. The others score in the process itself (one per GPU under ``accelerate launch``).
WORKER_METHODS: tuple[str, ...] = ("classical",)


def check_model_keys(models: dict[str, str], methods: list[str]) -> None:
    """Refuse a ``--model`` key no method reads, before any model loads: a misspelt key (``grounding_dino``) would
    otherwise be ignored and the method would load its default model. A known key that none of ``methods`` reads is
    refused too (:class:`~detecture.errors.NotServed`, as bench refuses every option no selected method reads): the
    user would believe that model was scored."""
    known = sorted({key for keys in MODEL_KEYS.values() for key in keys})
    unknown = [key for key in models if key not in known]
    if unknown:
        raise InputError(f"--model {unknown[0]}: unknown key; the keys are {', '.join(known)}")
    read = {key for name in methods for key in MODEL_KEYS.get(name, ())}
    for key in models:
        if key not in read:
            raise NotServed([model_option(key)], "method", readers(key), methods)


def check_method_names(names: list[str]) -> None:
    """Refuse a method name that is not registered: checked first, so a misspelt ``--methods`` is named as such, not
    taken for a run that no option serves."""
    for name in names:
        if name not in REGISTRY:
            raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}")


def build_method(name: str, options: MethodOptions) -> Method:
    """Instantiate a registered method (cheap: weights load later in :meth:`Method.load`)."""
    check_method_names([name])
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __package__), cls)(options)


__all__ = ["MODEL_KEYS", "OWN_OPTIONS", "REGISTRY", "WORKER_METHODS", "check_method_names", "check_model_keys",
           "Method", "MethodOptions", "MethodOutput", "build_method", "model_option"]
