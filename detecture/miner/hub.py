"""Export a mined dataset as a HuggingFace ``datasets`` DatasetDict (Arrow), optionally pushed to the Hub."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.metadata import SampleRecord, resolve_within
from ..utils import atomic

log = logging.getLogger(__name__)

HF_DIR = "hf_dataset"


def remove_export_leftovers(out: Path) -> None:
    """Undo what a killed export left in ``out``: a previous ``hf_dataset/`` moved aside (a kill between
    :func:`~detecture.utils.atomic.atomic_dir`'s two renames) is put back, then half-written copies
    (``.hf_dataset.<random>.tmp/``) and a moved-aside copy no longer needed are deleted. Each is a whole copy of the
    dataset, which nothing else would ever remove. Only the process that assembles ``out`` writes there."""
    atomic.restore_moved_aside(out / HF_DIR)
    for leftover in atomic.remove_temporaries(out, HF_DIR):
        log.info("removed %s, left behind by an interrupted --arrow export", leftover)


def export_dataset(out: Path, records: list[SampleRecord], push_to_hub: str | None = None) -> Any:
    """Build ``{"train", "val"}`` splits (image, masks, descriptions, scene, degree, score, k) and save them to
    ``<out>/hf_dataset``; with ``push_to_hub="user/name"`` also upload them (needs a Hub token)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "masks": datasets.Sequence(datasets.Image()),
        "descriptions": datasets.Sequence(datasets.Value("string")),
        "scene": datasets.Value("string"),
        "degree": datasets.Value("string"),
        "score": datasets.Value("float32"),
        "k": datasets.Value("int32"),
    })

    def rows(split: str) -> dict[str, list[Any]]:
        chosen = [r for r in records if r.extra["split"] == split]
        return {
            "id": [r.id for r in chosen],
            "image": [str(resolve_within(out, r.image_path)) for r in chosen],
            "masks": [[str(resolve_within(out, t.mask_path)) for t in r.textures] for r in chosen],
            "descriptions": [[t.description for t in r.textures] for r in chosen],
            "scene": [r.extra["scene"] for r in chosen],
            "degree": [r.extra["degree"] for r in chosen],
            "score": [r.extra["score"] for r in chosen],
            "k": [len(r.textures) for r in chosen],
        }

    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows(s), features=features) for s in ("train", "val")})
    target = out / HF_DIR
    with atomic.atomic_dir(target) as tmp:  # a kill mid-save must not leave a partial copy a reader can load
        dd.save_to_disk(str(tmp))  # embeds the image and mask bytes: the copy does not point back at our files
    log.info("saved HuggingFace dataset to %s", target)
    if push_to_hub:
        dd.push_to_hub(push_to_hub)
        log.info("pushed to the Hub as %s", push_to_hub)
    return dd
