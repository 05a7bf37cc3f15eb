"""What ``detecture segment`` writes and prints for each image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic, rle
from ..prompts import Regime, format_response
from ..result import SegmentationResult
from ..visualize import save_overlay


def forced_tiny_responses(regime: Regime, count: int) -> list[str]:
    """Teacher-forced texture lines for tiny random backbones, whose own generations contain none."""
    if regime.kind == "query":
        descriptions = [f"Texture matching '{regime.text}' (tiny model placeholder)"]
    else:
        k = regime.count if regime.kind == "oracle" else 3
        descriptions = [f"Texture of region {i} (tiny model placeholder)" for i in range(1, k + 1)]
    return [format_response(descriptions)] * count


def _output_stem(out: Path, path: Path, taken: frozenset[Path] | set[Path] = frozenset()) -> Path:
    """``out/<stem>``, made unique when two inputs share a file name (``taken``: stems already given out)."""
    stem, candidate, n = path.stem, out / path.stem, 1
    while (candidate.with_suffix(".json").exists() or candidate in taken) and n < 10_000:
        n += 1
        candidate = out / f"{stem}_{n}"
    return candidate


def plan_stems(out: Path, paths: list[Path]) -> list[Path]:
    """Unique output stems for a batch, decided up front so parallel workers never race for the same name."""
    stems: list[Path] = []
    for path in paths:
        stems.append(_output_stem(out, path, set(stems)))
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


def write_outputs(out: Path, path: Path, image: np.ndarray, result: SegmentationResult, regime: Regime,
                  note: str | None = None, stem: Path | None = None) -> dict:
    """Write ``<stem>.png`` (overlay + legend) and ``<stem>.json``; return the row the summary table prints."""
    labels = result.label_map
    record = result_record(path, result, regime, labels, note)
    stem = stem or _output_stem(out, path)
    save_overlay(stem.with_suffix(".png"), image, labels, result.descriptions, title=path.name, note=note)
    atomic.write_json(stem.with_suffix(".json"), record)
    return {"image": path.name, "regions": record["regions"], "json": stem.with_suffix(".json")}


def print_table(rows: list[dict]) -> None:
    print(f"{'image':<28} {'k':>2} {'area':>6}  description")
    for row in rows:
        if not row["regions"]:
            print(f"{row['image'][:28]:<28} {'-':>2} {'-':>6}  (no texture region found)")
        for region in row["regions"]:
            desc = region["description"] or "(no description)"
            print(f"{row['image'][:28]:<28} {region['index']:>2} {region['area_fraction']:>6.1%}  {desc[:70]}")
