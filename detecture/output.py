"""What a segmentation writes and prints per image: the JSON record, the overlay PNG, their names and the summary
table (the CLI writes them; the demo shows the same record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .prompts import Regime
from .result import SegmentationResult
from .utils import atomic, rle
from .utils.paths import InputSet
from .visualize import save_overlay

OUTPUT_TAG = ".detecture"


def _output_paths(stem: Path) -> tuple[Path, Path]:
    return stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.json"


def plan_outputs(out: Path, paths: list[Path], inputs: InputSet) -> list[Path]:
    """One output stem per image, ``out/<name>.detecture`` (+ ``.png`` / ``.json``), decided up front so parallel
    workers never race for a name. The tag keeps outputs apart from the user's images; a number is added when two
    inputs share a file name, a candidate is itself an input (``segment out/*.png --out out``) or holds an earlier
    result."""
    stems: list[Path] = []
    for path in paths:
        n = 1
        while True:
            stem = out / (path.stem + (f"_{n}" if n > 1 else "") + OUTPUT_TAG)
            png, json_path = _output_paths(stem)
            if stem not in stems and not json_path.exists() and png not in inputs and json_path not in inputs:
                break
            n += 1
        stems.append(stem)
    return stems


def result_record(path: Path, result: SegmentationResult, regime: Regime, labels: np.ndarray,
                  note: str | None = None) -> dict:
    """The JSON record of one image: the response, and per region its description, area and RLE mask."""
    total = labels.size
    counts = np.bincount(labels.ravel(), minlength=result.num_regions + 1)
    regions = []
    for k, description in enumerate(result.descriptions, 1):
        regions.append({"index": k, "description": description, "pixels": int(counts[k]),
                        "area_fraction": float(counts[k] / total), "rle": rle.encode(labels == k)})
    record = {
        "image": str(path), "size": [int(labels.shape[0]), int(labels.shape[1])],
        "method": result.meta.get("method", "detecture"),
        "regime": {"kind": regime.kind, "count": regime.count, "query": regime.text},
        "grounding": result.meta.get("grounding"), "response": result.response,
        "unassigned_fraction": float(counts[0] / total), "regions": regions,
        "contract": result.meta.get("contract"),
    }
    if note:
        record["note"] = note
    return record


def write_outputs(stem: Path, path: Path, image: np.ndarray, result: SegmentationResult, regime: Regime,
                  note: str | None = None) -> dict:
    """Write ``<stem>.png`` (overlay + legend) and ``<stem>.json`` (a stem from :func:`plan_outputs`); return the
    row the summary table prints."""
    labels = result.label_map
    record = result_record(path, result, regime, labels, note)
    png, json_path = _output_paths(stem)
    save_overlay(png, image, labels, result.descriptions, title=path.name, note=note)
    atomic.write_json(json_path, record)
    return {"image": path.name, "regions": record["regions"], "json": json_path}


def print_table(rows: list[dict]) -> None:
    print(f"{'image':<28} {'k':>2} {'area':>6}  description")
    for row in rows:
        if not row["regions"]:
            print(f"{row['image'][:28]:<28} {'-':>2} {'-':>6}  (no texture region found)")
        for region in row["regions"]:
            desc = region["description"] or "(no description)"
            print(f"{row['image'][:28]:<28} {region['index']:>2} {region['area_fraction']:>6.1%}  {desc[:70]}")
