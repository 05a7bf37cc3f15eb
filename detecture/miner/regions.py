"""Merge the texture classes of a kept scene into 2-5 disjoint texture regions.

Rule (applied to class areas and class adjacency from :class:`LabelStats`, never per pixel):

1. Every texture class covering at least ``min_area`` of the image becomes a region. A class keeps all its pixels
   even when they are disconnected (a wall on both sides of a door is one wall texture).
2. A texture class smaller than ``min_area`` (a fragment) is absorbed into the region it shares the longest
   boundary with; a fragment touching no region is dropped (its pixels stay unassigned, i.e. dustbin).
3. Regions are sorted by area, largest first (ties: lower class id first). Beyond ``max_regions`` the smallest are
   dropped rather than merged, because merging two different textures would make one description false.
4. Object, ambiguous and unlabelled pixels belong to no region.

Regions are therefore disjoint, each covers at least ``min_area``, and there are at most ``max_regions``;
a scene with fewer than ``min_regions`` yields no regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RegionConfig
from .scoring import LabelStats
from .vocabulary import Vocabulary


@dataclass(frozen=True)
class Region:
    name: str  # the main class's name, used by describers
    classes: tuple[int, ...]  # main class first, then absorbed fragments
    area: float  # fraction of the image


def extract_regions(stats: LabelStats, vocab: Vocabulary, cfg: RegionConfig) -> list[Region]:
    """Apply the module's merge rule; returns ``[]`` when fewer than ``cfg.min_regions`` regions survive."""
    texture = np.flatnonzero(vocab.is_texture & (stats.area > 0))
    big = texture[stats.area[texture] >= cfg.min_area]
    small = texture[stats.area[texture] < cfg.min_area]
    members: dict[int, list[int]] = {int(c): [int(c)] for c in big}
    if len(big):
        for frag in small:
            shared = stats.boundary[frag, big]
            if shared.max() > 0:
                members[int(big[int(np.argmax(shared))])].append(int(frag))
    regions = [
        Region(name=vocab.names[main], classes=tuple(cls), area=float(stats.area[cls].sum()))
        for main, cls in members.items()
    ]
    regions.sort(key=lambda r: (-r.area, r.classes[0]))
    regions = regions[: cfg.max_regions]
    return regions if len(regions) >= cfg.min_regions else []


def region_map(label: np.ndarray, regions: list[Region], n_classes: int) -> np.ndarray:
    """A uint8 map with 0 = no region and ``k`` = the k-th region (1-based), via one class-id look-up table."""
    lut = np.zeros(n_classes, dtype=np.uint8)
    for k, region in enumerate(regions, start=1):
        lut[list(region.classes)] = k
    return np.take(lut, label)
