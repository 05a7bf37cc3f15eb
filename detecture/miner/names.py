"""The names a scene's files get under ``--out``, and the scenes whose names the output folder cannot hold.

Every file the miner writes for a scene is named after the scene or one of its samples: a scene id is a file stem of
the dataset, so a legal but long one (a 251-byte stem, a 255-byte ``.jpg``) yields a mask name ``<id>_1.png`` the
file system refuses. Writing it would fail as an environment error on every re-run; instead the scene is listed as
rejected when the source is indexed, before any of its files are written, and the run goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

from .sources import Scene, SourceIndex, candidates, rejected_file

STATE_DIR = "mine_state"
NAME_TOO_LONG = "name_too_long"  # the "kind" of a rejected scene whose output names would be too long


def image_name(sample_id: str, source: Path) -> str:
    """The name of a sample's image under ``images/``: its id, with the suffix of the file it is copied from."""
    return f"{sample_id}{source.suffix.lower()}"


def mask_name(scene_id: str, k: int) -> str:
    """The name of region ``k`` (1-based) of a scene under ``masks/``, shared by all the scene's samples."""
    return f"{scene_id}_{k}.png"


def state_name(scene_id: str) -> str:
    """The name of a scene's result file under ``mine_state/scenes/`` (and of its claim under
    ``mine_state/claims/``)."""
    return f"{scene_id}.json"


def thumbnail_name(sample_id: str) -> str:
    """The name of a sample's overlay under ``review/``."""
    return f"{sample_id}.jpg"


def scene_file_names(scene: Scene, max_regions: int) -> list[str]:
    """Every name the miner may write for ``scene``, in any folder."""
    names = [state_name(scene.id)] + [mask_name(scene.id, k) for k in range(1, max_regions + 1)]
    for sample_id, _, path in candidates(scene):
        names += [image_name(sample_id, path), thumbnail_name(sample_id)]
    return names


def without_long_names(index: SourceIndex, limit: int, max_regions: int) -> SourceIndex:
    """The index without scenes one of whose file names would be longer than ``limit`` bytes (the output folder's
    file system's limit), each listed as rejected with the longest name's length and the limit."""
    kept, rejected = [], []
    for scene in index.scenes:
        longest = max(scene_file_names(scene, max_regions), key=lambda name: len(os.fsencode(name)))
        size = len(os.fsencode(longest))
        if size <= limit:
            kept.append(scene)
            continue
        path = scene.image if scene.image is not None else scene.variants[0].image if scene.variants else scene.label
        rejected.append(rejected_file(NAME_TOO_LONG, str(path), f"name too long to mine: scene {scene.id} would write "
                                                              f"a {size}-byte file name, the output folder takes "
                                                              f"{limit}; rename the file to mine it"))
    if not rejected:
        return index
    return SourceIndex(kept, [*index.rejected, *rejected], {**index.counts, "names_too_long": len(rejected)})
