"""What a mining run produced, for humans: summary numbers, a score histogram and an HTML contact sheet."""

from __future__ import annotations

import html
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..utils import atomic
from ..data.metadata import SampleRecord, load_sample
from ..errors import DatasetError
from ..utils.plotting import pyplot, save_figure
from .config import MinerConfig
from .names import thumbnail_name
from .overlay import draw_overlay
from .sources import SourceIndex

log = logging.getLogger(__name__)

HIST_BINS = list(range(0, 101, 5))
THUMB_WIDTH = 320


def build_summary(states: list[dict[str, Any]], records: list[SampleRecord], cfg: MinerConfig,
                  index: SourceIndex | None = None) -> dict[str, Any]:
    """Counts by status, split and K, region class frequencies, the score histogram (5-point bins), and what
    indexing the source found (``source_index``: Textured-ADE20K variants by degree, files ignored or rejected)."""
    kept = [st for st in states if st["status"] == "kept"]
    scores = [st["score"] for st in states if "score" in st]
    counts, _ = np.histogram(scores, bins=HIST_BINS)
    classes = Counter(r["name"] for st in kept for r in st["regions"])
    return {
        "threshold": cfg.threshold,
        "scenes": len(states),
        "status": dict(sorted(Counter(st["status"] for st in states).items())),
        "samples": len(records),
        "rejected_samples": sum(len(st.get("rejected", [])) for st in states),
        "rejected_files": len(index.rejected) if index else 0,
        "split_samples": dict(sorted(Counter(r.extra["split"] for r in records).items())),
        "split_scenes": dict(sorted(Counter(group[0].extra["split"] for group in _by_scene(records)).items())),
        "scenes_by_k": {str(k): n for k, n in sorted(Counter(len(st["regions"]) for st in kept).items())},
        "mean_regions": round(float(np.mean([len(st["regions"]) for st in kept])), 3) if kept else 0.0,
        "class_frequencies": dict(sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "score_histogram": {"bins": HIST_BINS, "counts": counts.tolist()},
        "source_index": index.counts if index else {},
    }


def _by_scene(records: list[SampleRecord]) -> list[list[SampleRecord]]:
    groups: dict[str, list[SampleRecord]] = {}
    for r in records:
        groups.setdefault(r.extra["scene"], []).append(r)
    return list(groups.values())


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text table for the CLI's final output."""
    rows = [
        ("scenes", summary["scenes"]),
        *((f"  {k}", v) for k, v in summary["status"].items()),
        ("samples written", summary["samples"]),
        *((f"  {k}", v) for k, v in summary["split_samples"].items()),
        ("samples rejected", summary["rejected_samples"]),
        ("files rejected on indexing", summary["rejected_files"]),
        *((f"  {k}", v) for k, v in summary["source_index"].get("rejected", {}).items()),
        *((f"textured variants {k}", v) for k, v in summary["source_index"].get("variants_by_degree", {}).items()),
        *((f"kept scenes with K={k}", v) for k, v in summary["scenes_by_k"].items()),
        ("mean regions per kept scene", summary["mean_regions"]),
        ("top classes", ", ".join(f"{k} {v}" for k, v in list(summary["class_frequencies"].items())[:8]) or "-"),
    ]
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_score_histogram(path: Path, scores: list[float], threshold: float) -> None:
    """PNG histogram of all scene scores with the keep-threshold marked."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(scores, bins=HIST_BINS, color="#4c72b0", edgecolor="white")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"keep threshold {threshold:g}")
    ax.set_xlabel("scene score")
    ax.set_ylabel("scenes")
    ax.set_title(f"Miner scores ({len(scores)} scenes)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def write_contact_sheet(out: Path, records: list[SampleRecord], seed: int, n: int) -> Path:
    """``review/contact_sheet.html``: a seeded random sample of mined images with overlays and descriptions."""
    review = out / "review"
    chosen = sorted(random.Random(seed).sample(records, min(n, len(records))), key=lambda r: r.id)
    rows = []
    for record in chosen:
        try:
            sample = load_sample(out, record)
        except DatasetError as exc:
            log.warning("contact sheet: skipping %s (%s)", record.id, exc)
            continue
        rmap = np.zeros(sample.image.shape[:2], dtype=np.uint8)
        for k, mask in enumerate(sample.masks, start=1):
            rmap[mask] = k
        image = Image.fromarray(sample.image)
        if image.width > THUMB_WIDTH:  # shrink before drawing: cheaper, and the legend text stays legible
            size = (THUMB_WIDTH, max(1, round(image.height * THUMB_WIDTH / image.width)))
            image = image.resize(size, Image.BILINEAR)
            rmap = np.asarray(Image.fromarray(rmap).resize(size, Image.NEAREST))
        sheet = draw_overlay(image, rmap, record.extra.get("texture_classes", []))
        thumb = thumbnail_name(record.id)
        with atomic.atomic_path(review / thumb) as tmp:
            sheet.save(tmp, format="JPEG", quality=85)
        items = "".join(f"<li>{html.escape(d)}</li>" for d in sample.descriptions)
        rows.append(
            f"<tr><td><img src=\"{html.escape(thumb)}\" width=\"{THUMB_WIDTH}\"></td><td><b>{html.escape(record.id)}"
            f"</b><br>score {record.extra.get('score')} · degree {html.escape(str(record.extra.get('degree')))} · "
            f"{html.escape(str(record.extra.get('split')))}<ol>{items}</ol></td></tr>"
        )
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Detecture miner review</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:6px}</style></head><body>"
        f"<h1>Mined samples ({len(rows)} of {len(records)})</h1><table>{''.join(rows)}</table></body></html>\n"
    )
    path = review / "contact_sheet.html"
    atomic.write_text(path, page)
    return path
