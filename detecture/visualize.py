"""Pictures of a partition: the image with coloured regions and a legend carrying the descriptions."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .utils.image_ops import REGION_COLOURS, fit_to_side, label_boundaries, resize_pair
from .utils.plotting import literal_text, pyplot, save_figure

MAX_DISPLAY_SIDE = 1600
# Height / width of the image panel is kept within 1 / MAX_PANEL_ASPECT .. MAX_PANEL_ASPECT. A taller image is drawn
# smaller inside it (a 20 x 2000 px strip would otherwise ask for a figure 600 inches high, gigabytes of pixels); a
# wider one is stretched to its height (drawn true to shape, an 8 x 8000 px strip would be under one pixel high).
MAX_PANEL_ASPECT = 3.0


def region_color(k: int) -> np.ndarray:
    """RGB colour of region k (1-based)."""
    return REGION_COLOURS[(k - 1) % len(REGION_COLOURS)]


def colorize(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend region colours over the image (label 0 left as is) and draw region boundaries."""
    out = image.astype(np.float32).copy()
    for k in np.unique(labels):
        if k == 0:
            continue
        sel = labels == k
        out[sel] = (1 - alpha) * out[sel] + alpha * region_color(int(k))
    out[label_boundaries(labels)] = 255
    return out.round().astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, labels: np.ndarray, descriptions: Sequence[str],
                 title: str | None = None, note: str | None = None) -> Path:
    """Write a PNG: the image with its partition, and a legend mapping each colour to its description and area.

    The picture is bounded whatever the image's shape (at most :data:`MAX_DISPLAY_SIDE` px shown, in a panel at
    most :data:`MAX_PANEL_ASPECT` times as high as wide), so its memory never grows with the input; and it is
    always visible: an image more than :data:`MAX_PANEL_ASPECT` times as wide as high is stretched to a panel that
    much wider than high, each side shrunk on its own so a strip keeps its rows. Every text is drawn as written (a
    ``$`` in a file name is a dollar sign, not mathtext)."""
    from matplotlib.patches import Patch

    plt = pyplot()
    h, w = labels.shape
    wide = w > MAX_PANEL_ASPECT * h
    if wide:
        image, labels = resize_pair(image, labels, (min(h, math.ceil(MAX_DISPLAY_SIDE / MAX_PANEL_ASPECT)),
                                                    min(w, MAX_DISPLAY_SIDE)))
    else:
        image, labels = fit_to_side(image, labels, MAX_DISPLAY_SIDE)
    fractions = np.bincount(labels.ravel(), minlength=len(descriptions) + 1) / labels.size
    handles = [Patch(color=region_color(k) / 255.0,
                     label=f"{k}. " + "\n    ".join(textwrap.wrap(f"{d or '(no description)'} ({fractions[k]:.0%})",
                                                                  60)))
               for k, d in enumerate(descriptions, 1)]
    if fractions[0] > 0:
        handles.append(Patch(facecolor="none", edgecolor="black", label=f"unassigned ({fractions[0]:.0%})"))
    panel = min(max(h / w, 1 / MAX_PANEL_ASPECT), MAX_PANEL_ASPECT)  # the image panel's height / width
    fig_w = 6.0 + 4.5
    with literal_text():  # file names, queries and descriptions are the user's words, never mathtext
        fig, (ax, legend_ax) = plt.subplots(1, 2, figsize=(fig_w, max(4.0, 6.0 * panel)),
                                            gridspec_kw={"width_ratios": [6.0, 4.5]})
        if wide:
            ax.imshow(colorize(image, labels), aspect="auto", interpolation="nearest")
            ax.set_box_aspect(panel)
        else:
            ax.imshow(colorize(image, labels))
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=9)
        legend_ax.set_axis_off()
        legend_ax.legend(handles=handles, loc="center left", fontsize=8, frameon=False,
                         title=f"{len(descriptions)} texture region{'s' if len(descriptions) != 1 else ''}")
        if note:
            fig.text(0.5, 0.01, note, ha="center", fontsize=8, color="firebrick")
        fig.tight_layout()
        return save_figure(fig, path, dpi=110)
