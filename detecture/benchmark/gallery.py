"""Per-dataset gallery PNG: for the first few samples, the image, its ground truth and every method's partition.

Partitions are read back from the label maps the runner saved for the gallery samples, so the gallery shows exactly
what was scored. Predicted labels are recoloured through the Hungarian matches recorded for the sample, so a region
matched to GT region j takes GT region j's colour; unmatched predictions get the remaining colours, unassigned
pixels are black.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.image_ops import LABEL_COLOURS
from ..utils.plotting import literal_text, pyplot, save_figure
from . import cell_store
from .runner import Cell

log = logging.getLogger(__name__)

def colourise(labels: np.ndarray, mapping: dict[int, int] | None = None, n_gt: int = 0) -> np.ndarray:
    """(H, W) labels → RGB; ``mapping`` renames predicted labels to their matched GT label first, and unmatched
    predictions take colours after the ``n_gt`` GT regions' so they never look like an unrelated GT region."""
    labels = labels.astype(np.int64)
    if mapping is not None:
        lut = np.arange(int(labels.max()) + 1)
        spare = iter(range(n_gt + 1, n_gt + 1 + len(lut)))
        for lab in range(1, len(lut)):
            lut[lab] = mapping.get(lab) or next(spare)
        labels = lut[labels]
    wrapped = np.where(labels == 0, 0, (labels - 1) % (len(LABEL_COLOURS) - 1) + 1)
    return LABEL_COLOURS[wrapped]


def _matches(record: dict[str, Any] | None) -> dict[int, int]:
    if not record or record.get("status") != "ok":
        return {}
    return {int(p): int(g) for g, p, _ in record.get("matches", [])}


def write_gallery(dataset_cells: list[Cell], out: Path, n_samples: int) -> Path | None:
    """One PNG for a dataset: rows = samples, columns = image, GT, then each method. Returns its path."""
    if not dataset_cells or n_samples <= 0:
        return None
    plt = pyplot()

    dataset = dataset_cells[0].dataset
    records = dataset_cells[0].records[:n_samples]
    recorded = [cell_store.read_cell(c.directory(out)) for c in dataset_cells]
    path = out / "gallery" / f"{cell_store.safe_name(dataset.name)}.png"
    with literal_text():  # dataset and method names are the user's words, never mathtext
        save_figure(_draw(plt, dataset_cells, records, recorded, out), path)
    return path


def _draw(plt, dataset_cells: list[Cell], records: list, recorded: list[dict[str, Any]], out: Path):
    """The gallery's figure: a row per record, the image, its ground truth and each cell's partition."""
    dataset = dataset_cells[0].dataset
    n_cols = 2 + len(dataset_cells)
    fig, axes = plt.subplots(len(records), n_cols, figsize=(1.9 * n_cols, 1.9 * len(records)), dpi=100,
                             squeeze=False)
    for row, record in enumerate(records):
        n_gt = 0
        try:
            sample, truth, _ = dataset.load(record)
            panels = [sample.image, colourise(truth.labels)]
            n_gt = sample.masks.shape[0]
        except Exception as exc:  # noqa: BLE001 — a broken sample gets an empty row, the gallery still renders
            log.warning("gallery: %s: %s", record.id, exc)
            panels = [None, None]
        for cell, rec in zip(dataset_cells, recorded):
            result = rec.get(record.id)
            # a partition is drawn only beside the ok result it was saved with: an output folder may still hold
            # one a later failure of the sample replaced
            ok = result is not None and result.get("status") == "ok"
            labels = cell_store.load_partition(cell.partition_path(out, record.id)) if ok else None
            panels.append(None if labels is None else colourise(labels, _matches(result), n_gt))
        titles = ["image", "ground truth"] + [c.method.name for c in dataset_cells]
        for col, (panel, title) in enumerate(zip(panels, titles)):
            ax = axes[row, col]
            ax.set_axis_off()
            if panel is not None:
                ax.imshow(panel, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle(dataset.name, fontsize=10)
    fig.tight_layout()
    return fig
