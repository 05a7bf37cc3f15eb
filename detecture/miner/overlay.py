"""Coloured region overlays with a legend whose swatches are exactly the drawn colours.

Used twice: as the picture the Qwen describer is shown (so "region 2 = green" in the prompt matches the image) and
for the human-review contact sheet.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (name, RGB): names are said to the VLM, so they are plain, well-separated colour words.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 25, 75)),
    ("green", (60, 180, 75)),
    ("blue", (0, 110, 230)),
    ("yellow", (255, 225, 25)),
    ("magenta", (240, 50, 230)),
    ("cyan", (70, 240, 240)),
)
LEGEND_ROW = 18
SWATCH = 12


def region_contours(region_map: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another region (a 1-px outline of every region)."""
    edge = np.zeros(region_map.shape, dtype=bool)
    edge[:, :-1] |= region_map[:, :-1] != region_map[:, 1:]
    edge[:-1, :] |= region_map[:-1, :] != region_map[1:, :]
    return edge


def draw_overlay(image: Image.Image, region_map: np.ndarray, labels: list[str], alpha: float = 0.45) -> Image.Image:
    """Tint region ``k`` (1-based in ``region_map``) with ``PALETTE[k-1]``, outline it, and add a legend strip.

    Outline pixels and legend swatches use the exact palette colour; the legend lists ``k colour: label``.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = np.array([(0, 0, 0)] + [c for _, c in PALETTE], dtype=np.float32)
    tint = colours[region_map]
    inside = (region_map > 0)[..., None]
    out = np.where(inside, rgb * (1 - alpha) + tint * alpha, rgb)
    contour = region_contours(region_map) & (region_map > 0)
    out[contour] = tint[contour]
    body = Image.fromarray(out.round().astype(np.uint8))
    legend = Image.new("RGB", (body.width, LEGEND_ROW * len(labels) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    font = ImageFont.load_default()
    for k, label in enumerate(labels):
        name, colour = PALETTE[k]
        top = 2 + k * LEGEND_ROW
        draw.rectangle([4, top + 2, 4 + SWATCH - 1, top + 2 + SWATCH - 1], fill=colour)
        draw.text((8 + SWATCH, top + 2), f"{k + 1} {name}: {label}", fill=(0, 0, 0), font=font)
    sheet = Image.new("RGB", (body.width, body.height + legend.height), (255, 255, 255))
    sheet.paste(body, (0, 0))
    sheet.paste(legend, (0, body.height))
    return sheet


def legend_swatch_box(k: int, image_height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of legend swatch ``k`` (0-based) in a :func:`draw_overlay` result, inclusive."""
    top = image_height + 2 + k * LEGEND_ROW + 2
    return 4, top, 4 + SWATCH - 1, top + SWATCH - 1
