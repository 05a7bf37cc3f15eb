"""Coloured region overlays with a legend whose swatches are exactly the drawn colours.

Used twice: as the picture the Qwen describer is shown (so "region 2 = green" in the prompt matches the image) and
for the human-review contact sheet.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils.image_ops import NAMED_REGION_COLOURS, label_boundaries

LEGEND_ROW = 18
SWATCH = 12


def draw_overlay(image: Image.Image, region_map: np.ndarray, labels: list[str], alpha: float = 0.45) -> Image.Image:
    """Tint region ``k`` (1-based in ``region_map``) with ``NAMED_REGION_COLOURS[k-1]``, outline it, and add a
    legend strip.

    Outline pixels and legend swatches use the exact palette colour; the legend lists ``k colour: label``.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = np.array([(0, 0, 0)] + [c for _, c in NAMED_REGION_COLOURS], dtype=np.float32)
    tint = colours[region_map]
    inside = (region_map > 0)[..., None]
    out = np.where(inside, rgb * (1 - alpha) + tint * alpha, rgb)
    contour = label_boundaries(region_map) & (region_map > 0)
    out[contour] = tint[contour]
    body = Image.fromarray(out.round().astype(np.uint8))
    legend = Image.new("RGB", (body.width, LEGEND_ROW * len(labels) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    font = ImageFont.load_default()
    for k, label in enumerate(labels):
        name, colour = NAMED_REGION_COLOURS[k]
        top = 2 + k * LEGEND_ROW
        draw.rectangle([4, top + 2, 4 + SWATCH - 1, top + 2 + SWATCH - 1], fill=colour)
        draw.text((8 + SWATCH, top + 2), f"{k + 1} {name}: {label}", fill=(0, 0, 0), font=font)
    sheet = Image.new("RGB", (body.width, body.height + legend.height), (255, 255, 255))
    sheet.paste(body, (0, 0))
    sheet.paste(legend, (0, body.height))
    return sheet
