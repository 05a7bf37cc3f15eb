"""The models each benchmark method reads, by ``--model`` key, and the methods ``--tiny`` swaps to tiny random ones: a
module of its own, free of the methods' imports, so that ``detecture bench --help`` words its model options from it
without loading numpy, and the command refuses what --tiny would leave unread before any method is built."""

from __future__ import annotations

from typing import NamedTuple, Sequence


class Reads(NamedTuple):
    """What one method reads of the command line: its models, by ``--model KEY=ID`` key (``qwen`` and ``sam3`` are
    also ``--qwen`` and ``--sam3``), and its other options, by their argparse dest."""

    models: tuple[str, ...]
    options: tuple[str, ...]


# name → what the method reads: the one table of it. A --model key no method reads is refused
# (methods.check_model_keys), and so is any of these options or models none of the selected methods reads
# (commands.bench), since an ignored --head or --prompt lets the user believe it was scored. ``predictions`` is
# --predictions' method.
READS: dict[str, Reads] = {
    "classical": Reads((), ("classical_config", "workers")),
    "detecture": Reads(("qwen", "sam3"), ("device", "tiny", "head")),
    "detecture-text": Reads(("qwen", "sam3"), ("device", "tiny")),
    "sam3": Reads(("sam3",), ("device", "tiny", "prompt")),
    "grounding-sam3": Reads(("grounding-dino", "sam3"), ("device", "prompt")),
    "texturesam": Reads(("texturesam",), ("device",)),
    "sa2va": Reads(("sa2va",), ("device", "trust_remote_code")),
    "predictions": Reads((), ("predictions_pattern",)),
}

# name → the ``--model KEY=ID`` keys the method reads.
MODEL_KEYS: dict[str, tuple[str, ...]] = {name: reads.models for name, reads in READS.items()}

# The methods whose backbones --tiny swaps for tiny random ones, built on the CPU from the seed: they read neither
# their models' ids nor --device then (the other methods load their models as without --tiny).
TINY_METHODS: tuple[str, ...] = tuple(name for name, reads in READS.items() if "tiny" in reads.options)


def tiny_leaves_unread(key: str | None, methods: Sequence[str]) -> bool:
    """Whether --tiny leaves the model of ``key`` unread by ``methods`` (``None``: the device their models load on,
    which every method that loads a model reads): some of them read it and every one that does is a
    :data:`TINY_METHODS` one. A model no selected method reads is not --tiny's doing (methods.check_model_keys
    refuses it)."""
    reading = [name for name in methods if MODEL_KEYS.get(name) and (key is None or key in MODEL_KEYS[name])]
    return bool(reading) and all(name in TINY_METHODS for name in reading)


def readers(key: str) -> list[str]:
    """The methods that read the model of ``key``, in :data:`MODEL_KEYS`' order."""
    return [name for name, keys in MODEL_KEYS.items() if key in keys]


def option_readers(dest: str) -> list[str]:
    """The methods that read the option of argparse ``dest``: one of :class:`Reads`' options, or ``qwen`` or
    ``sam3`` (--qwen and --sam3, the models of those keys), in :data:`READS`' order."""
    return [name for name, reads in READS.items() if dest in reads.options or dest in reads.models]


def method_options() -> dict[str, list[str]]:
    """Each option of :data:`READS` (by argparse dest, --qwen and --sam3 included) → the methods that read it."""
    dests = {dest for reads in READS.values() for dest in reads.options} | {"qwen", "sam3"}
    return {dest: option_readers(dest) for dest in sorted(dests)}
