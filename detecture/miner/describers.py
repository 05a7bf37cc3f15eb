"""Describers write one ``Texture of <name>, <features>, <where>`` phrase per region.

Two are built in: ``template`` (class name, colour/roughness measured from the pixels, position; no model, so the
whole pipeline runs offline and deterministically) and ``qwen`` (the local Qwen3-VL via
:mod:`detecture.backbones.qwen`, shown the photo beside a coloured overlay whose legend names the colours).
Whatever a describer returns is checked by :func:`validate_description`; the miner never writes an invalid phrase.
"""

from __future__ import annotations

import colorsys
import logging
import re
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import InputError, ModelAccessError
from ..utils.image_ops import NAMED_REGION_COLOURS
from .config import DescriberConfig
from .overlay import draw_overlay
from .regions import Region

log = logging.getLogger(__name__)

PREFIX = "Texture of "


def validate_description(text: str, min_words: int, max_words: int) -> str | None:
    """Return why ``text`` is not a valid region description, or ``None`` if it is.

    Valid: one line, starts with ``Texture of``, has the ``<name>, <features>, <where>`` shape (at least two
    commas) and ``min_words..max_words`` words.
    """
    if not isinstance(text, str) or not text.strip():
        return "empty description"
    if "\n" in text.strip():
        return "description spans several lines"
    if not text.startswith(PREFIX):
        return f"does not start with '{PREFIX.strip()}'"
    if text.count(",") < 2:
        return "expected 'Texture of <name>, <features>, <where>' (two commas)"
    n = len(text.split())
    if not min_words <= n <= max_words:
        return f"{n} words; expected {min_words}-{max_words}"
    return None


class Describer(Protocol):
    name: str
    in_worker: bool  # True: cheap and picklable, runs inside each worker process; False: runs in the main process

    def load(self) -> None:
        """Load what :meth:`describe` needs (a model), before the first scene: a model that cannot load must stop
        the run with its own error, not fail each scene as if the scene were bad. Raises ModelAccessError."""

    def describe(self, image: Image.Image, region_map: np.ndarray, regions: list[Region]) -> list[str]:
        """One phrase per region (``region_map`` is 1-based: pixel value k belongs to ``regions[k-1]``)."""


def _colour_word(rgb: np.ndarray) -> str:
    """A plain colour name for a mean RGB colour (0-255)."""
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=float) / 255.0))
    if s < 0.18:
        return "white" if v > 0.85 else "black" if v < 0.15 else "grey"
    hue = h * 360
    if (hue < 45 or hue >= 330) and v < 0.6:
        return "brown"
    for limit, name in ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (200, "teal"),
                        (260, "blue"), (300, "purple"), (330, "pink")):
        if hue < limit:
            return name
    return "red"


def _where_phrases(cy: float, cx: float, span_y: float, span_x: float) -> list[str]:
    """Position phrases for a region (centroid and extent as fractions of the image), longest first."""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    if span_x > 0.8 and span_y > 0.8:
        return ["spread over most of the image", "over most of the image"]
    if span_x > 0.8:
        return [f"across the {row} of the image", f"across the {row}"]
    if span_y > 0.8:
        side = {"left": "left side", "right": "right side", "centre": "middle"}[col]
        return [f"along the {side} of the image", f"along the {side}"]
    if row == "middle" and col == "centre":
        return ["in the centre of the image", "in the centre"]
    spot = {"top": "upper", "bottom": "lower", "middle": "middle"}[row] + " " + col
    return [f"in the {spot} part of the image", f"in the {spot} area"]


class TemplateDescriber:
    """Descriptions from the class name, the region's measured colour, tone and roughness, and its position.

    No model: deterministic, fast (works on a ~128-px thumbnail) and offline. The phrase is assembled from the
    longest variant that fits the configured word range.
    """

    name = "template"
    in_worker = True

    def __init__(self, cfg: DescriberConfig) -> None:
        self.cfg = cfg

    def load(self) -> None:
        """Nothing to load."""

    def describe(self, image: Image.Image, region_map: np.ndarray, regions: list[Region]) -> list[str]:
        stride = max(1, min(region_map.shape) // 128)
        rmap = region_map[::stride, ::stride]
        rgb = np.asarray(image.convert("RGB").reduce(stride), dtype=np.float32)  # box-averaged, same size as rmap
        grey = rgb.mean(axis=2)
        rough = np.zeros_like(grey)
        rough[:, :-1] += np.abs(np.diff(grey, axis=1))
        rough[:-1, :] += np.abs(np.diff(grey, axis=0))
        h, w = rmap.shape
        flat = rmap.ravel()
        n = len(regions) + 1
        count = np.maximum(np.bincount(flat, minlength=n), 1)
        mean_rgb = np.stack([np.bincount(flat, rgb[..., c].ravel(), n) for c in range(3)], axis=1) / count[:, None]
        mean_rough = np.bincount(flat, rough.ravel(), n) / count
        yy, xx = np.indices(rmap.shape)
        out = []
        for k, region in enumerate(regions, start=1):
            ys, xs = yy[rmap == k], xx[rmap == k]
            if len(ys) == 0:  # region thinner than the thumbnail stride: fall back to the full-resolution map
                ys, xs = np.nonzero(region_map == k)
                ys, xs, hh, ww = ys / stride, xs / stride, h, w
            else:
                hh, ww = h, w
            where = _where_phrases(ys.mean() / hh, xs.mean() / ww, (np.ptp(ys) + 1) / hh, (np.ptp(xs) + 1) / ww)
            luminance = float(mean_rgb[k] @ np.array([0.299, 0.587, 0.114])) / 255.0
            tone = "dark" if luminance < 0.35 else "bright" if luminance > 0.7 else "muted"
            grain = "smooth" if mean_rough[k] < 6 else "finely grained" if mean_rough[k] < 18 else "coarse"
            colour = _colour_word(mean_rgb[k])
            features = [f"{tone} {colour} and {grain} surface", f"{tone} {colour} {grain} surface",
                        f"{colour} {grain} surface"]
            out.append(self._fit(region.name, features, where))
        return out

    def _fit(self, name: str, features: list[str], where: list[str]) -> str:
        for f in features:
            for p in where:
                text = f"{PREFIX}{name}, {f}, {p}"
                if self.cfg.min_words <= len(text.split()) <= self.cfg.max_words:
                    return text
        return f"{PREFIX}{name}, {features[0]}, {where[0]}"  # validation rejects it and says why


SYSTEM_PROMPT = (
    "You are a vision assistant that analyses surface textures. Answer only in the requested format, one line per "
    "region, with no other text."
)
# One reply line per region: ``REGION_k: text``, also as a chat model formats lists, with a bullet (``- ``, ``* ``,
# ``• ``) before the label and markdown emphasis (``**REGION_1**:``, ``**REGION_1:**``, ``` `REGION_1` ```) around it.
EMPHASIS = "*_`"
_EMPHASISED = f"[{re.escape(EMPHASIS)}]*"
LINE = re.compile(rf"^\s*(?:[-*+\u2022\u2013]\s+)?{_EMPHASISED}\s*(?:REGION|TEXTURE)?[\s_#-]*(\d+)\s*{_EMPHASISED}\s*"
                  r"[:.)\]-]\s*(.+?)\s*$", re.IGNORECASE)


def build_prompt(regions: list[Region], min_words: int, max_words: int) -> str:
    """The user prompt: what the overlay's colours mean and the exact output format."""
    legend = "\n".join(
        f"- REGION_{k}: outlined in {NAMED_REGION_COLOURS[k - 1][0]}, dataset label '{r.name}'"
        for k, r in enumerate(regions, start=1)
    )
    return (
        "The left picture is a photo; the right picture is the same photo with coloured regions and a legend.\n"
        f"{legend}\n"
        f"For each region write one line 'REGION_k: Texture of <name>, <features>, <where>' of {min_words} to "
        f"{max_words} words: (1) a common name of the material, (2) the visual features that distinguish it from "
        "the other regions, (3) its rough position in the image. Describe each region as a whole surface, in the "
        "photo's real colours (not the overlay colours)."
    )


def parse_reply(reply: str, n_regions: int) -> list[str]:
    """Pick the ``REGION_k:`` lines out of a reply; a missing region gets ``""`` (which validation rejects)."""
    found: dict[int, str] = {}
    for line in reply.splitlines():
        m = LINE.match(line)
        if m and 1 <= int(m.group(1)) <= n_regions and int(m.group(1)) not in found:
            found[int(m.group(1))] = m.group(2).replace("<|seg|>", "").strip().strip(f"{EMPHASIS}\"' \t")
    return [found.get(k, "") for k in range(1, n_regions + 1)]


def side_by_side(image: Image.Image, overlay: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (image.width + overlay.width + 8, max(image.height, overlay.height)), (255, 255, 255))
    canvas.paste(image.convert("RGB"), (0, 0))
    canvas.paste(overlay, (image.width + 8, 0))
    return canvas


class QwenDescriber:
    """Descriptions from the local Qwen3-VL (``detecture.backbones.qwen.QwenVL``), loaded once, by :meth:`load`.

    ``model`` may be passed in (tests use ``QwenVL.tiny()``); otherwise ``cfg.qwen_model`` is loaded by
    :meth:`load`, which the miner calls before the first scene (and :meth:`describe` on first use otherwise).
    """

    name = "qwen"
    in_worker = False

    def __init__(self, cfg: DescriberConfig, model: Any = None, device: str | None = None) -> None:
        self.cfg, self.model, self.device = cfg, model, device

    def load(self) -> None:
        self._model()

    def _model(self) -> Any:
        if self.model is None:
            try:
                from ..backbones.qwen import QwenVL
            except ImportError as exc:
                raise ModelAccessError(f"the qwen describer needs detecture.backbones.qwen ({exc})") from None
            log.info("loading %s for descriptions", self.cfg.qwen_model)
            self.model = QwenVL.from_pretrained(self.cfg.qwen_model, device=self.device)
        return self.model

    def describe(self, image: Image.Image, region_map: np.ndarray, regions: list[Region]) -> list[str]:
        overlay = draw_overlay(image, region_map, [r.name for r in regions])
        prompt = build_prompt(regions, self.cfg.min_words, self.cfg.max_words)
        reply = self._model().chat([side_by_side(image, overlay)], prompt, SYSTEM_PROMPT, self.cfg.max_new_tokens)[0]
        return parse_reply(reply, len(regions))


DESCRIBERS = ("template", "qwen")


def build_describer(name: str, cfg: DescriberConfig, **kwargs: Any) -> Describer:
    """Make the named describer (``kwargs`` go to its constructor, e.g. ``model=`` or ``device=`` for qwen)."""
    if name == "template":
        return TemplateDescriber(cfg)
    if name == "qwen":
        return QwenDescriber(cfg, **kwargs)
    raise InputError(f"unknown describer {name!r}; available: {list(DESCRIBERS)}")
