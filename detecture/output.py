"""What a segmentation writes and prints per image: the JSON record, the overlay PNG, their names and the summary
table (the CLI writes them; the demo shows the same record)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .prompts import Regime
from .result import SegmentationResult
from .utils import atomic, rle
from .utils.claims import folder_lock, is_alive, remove_if_empty, this_process
from .utils.paths import InputSet, name_max, printable, resolved
from .visualize import save_overlay

OUTPUT_TAG = ".detecture"


CLAIM_SUFFIX = ".claim"


def _output_paths(stem: Path) -> tuple[Path, Path]:
    return stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.json"


def is_output(path: Path) -> bool:
    """Whether ``path`` is an overlay a segment run wrote: ``<name>.detecture.png`` with its finished record
    ``<name>.detecture.json`` beside it. Reading a folder of earlier results back would segment the overlays; a
    user's image that merely has such a name, with no record beside it, is not one."""
    return path.name.endswith(f"{OUTPUT_TAG}.png") and _output_paths(path.parent / path.stem)[1].is_file()


def _claim_path(stem: Path) -> Path:
    """Where a run claims ``stem`` (``photo.detecture``): the hidden ``.photo.claim`` beside its outputs, so that no
    reader globbing the results (``*.detecture.json``) ever takes a claim left by a killed run for one. Its name is
    shorter than the JSON's, so every image whose outputs the file system takes can be claimed."""
    return stem.parent / f".{stem.name[:-len(OUTPUT_TAG)]}{CLAIM_SUFFIX}"


def _claim_paths(stem: Path) -> tuple[Path, Path]:
    """Every hidden name a claim on ``stem`` may have: :func:`_claim_path`, and ``.photo.detecture.claim``, which
    runs of the version before wrote (a claim record under the JSON's own name, older still, is read as the JSON).
    Either may also be another image's (``photo.detecture.png``'s claim is ``.photo.detecture.claim``): the input
    a claim names tells them apart."""
    return _claim_path(stem), stem.parent / f".{stem.name}{CLAIM_SUFFIX}"


def _name_too_long(stem: Path, limit: int) -> str | None:
    """Why ``stem``'s outputs cannot be written, when one of their names is longer than ``limit`` bytes: that is
    the image's own problem (its name), reported as its failure before work starts, not a fault that stops the run
    on every re-run."""
    longest = max(len(os.fsencode(p.name)) for p in (*_output_paths(stem), _claim_path(stem)))
    if longest <= limit:
        return None
    return f"file name too long for its outputs ({longest} bytes, the output folder takes {limit}); rename it"


def input_identity(path: Path) -> dict:
    """Which input made an output: its resolved path (:func:`~detecture.utils.paths.printable`), size and
    modification time (a changed file is redone)."""
    st = path.stat()
    return {"path": printable(resolved(path)), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class Claims:
    """The outcome of :meth:`OutputFolder.claim`: output stems this run now owns, and the images it skips."""

    stems: dict[int, Path] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)  # complete outputs from the same input and settings
    replaced: list[int] = field(default_factory=list)  # complete outputs from the same input, other settings: redone
    busy: list[int] = field(default_factory=list)  # claimed by another live run in this folder
    refused: dict[int, str] = field(default_factory=dict)  # images whose outputs cannot be named, with why


class OutputFolder:
    """Output names in one ``--out`` folder, shared safely by re-runs, concurrent runs and the ranks of one run.

    Image ``photo.jpg`` writes ``photo.detecture.png`` + ``.json`` (the tag keeps outputs apart from the user's
    images). The JSON is written last and names the input (:func:`input_identity`) and the settings that made it, so
    a re-run of the same command skips complete outputs (both files there, same input and settings) and ``--force``
    redoes them in place. A name is only ever reused for the input its JSON records, under whatever number it was
    first given; an image without one takes the first number whose two files do not exist at all (``photo_2`` for a
    different input of the same name, where the name is itself an input, or where a file the run did not write is
    there), so an output never replaces a file of the user's or of another input.

    Before work starts, each name is claimed under an exclusive lock on the folder by writing a claim record to the
    hidden ``.photo.claim`` (:func:`_claim_path`) and removing the JSON of the output being redone, if any; the
    finished JSON is written last and the claim then removed by its run (:meth:`release`), so every
    ``*.detecture.json`` in the folder is a finished record, whenever the run was stopped. Another run (or rank) thus never takes a name in use, and a
    claim left by a dead process (same host, process gone; or another host, whose process cannot be checked) is
    taken over by the next run, which first deletes the hidden temporaries a killed write left for that name. A
    claim under the names earlier versions used (:func:`_claim_paths`, and a record holding a claim under the JSON's
    own name) is a claim too.
    """

    def __init__(self, out: Path, inputs: InputSet, settings: dict, force: bool = False) -> None:
        self.out, self.inputs, self.settings, self.force = out, inputs, settings, force
        self.owner = this_process()
        self.made = _missing_folders(out)  # made by the first claim; see remove_if_unused

    def remove_if_unused(self) -> None:
        """Remove the folders this run made for its outputs if they hold none: a run whose every image failed, or
        that stopped before its first output, leaves no empty ``detecture_out/`` behind. A folder another run (or
        rank) writes into is not empty, and is kept."""
        for folder in self.made:  # the output folder first, then each parent it needed
            if not remove_if_empty(folder):
                return

    def claim(self, images: list[Path], todo: list[int]) -> Claims:
        """Claim an output name for each image index in ``todo`` (indices into ``images``, the run's whole list:
        the n-th image named ``photo`` prefers ``photo_n``, whichever process claims it). An image whose output
        names would be too long for the folder's file system is refused, alone, with why."""
        order: dict[str, int] = {}
        preferred = []
        for path in images:
            order[path.stem] = order.get(path.stem, 0) + 1
            preferred.append(order[path.stem])
        claims, taken = Claims(), set()
        with folder_lock(self.out):
            recorded, limit = self._recorded_stems(), name_max(self.out)
            for i in todo:
                identity = input_identity(images[i])
                verdict, stem = self._previous(recorded.get(images[i].stem, []), identity, taken)
                if stem is None:
                    stem = self._fresh(images[i].stem, preferred[i], taken)
                    too_long = _name_too_long(stem, limit)
                    if too_long:
                        claims.refused[i] = too_long
                        continue
                taken.add(stem)
                if verdict == "done":
                    claims.done.append(i)
                    self._drop_dead_claims(stem, identity)
                elif verdict == "busy":
                    claims.busy.append(i)
                else:
                    if verdict == "replaced":
                        claims.replaced.append(i)
                    atomic.write_json(_claim_path(stem), {"input": identity, "settings": self.settings,
                                                          "claim": self.owner})
                    json_path, previous = _output_paths(stem)[1], _claim_paths(stem)[1]
                    if _made_from(_read_record(json_path), identity):  # the output being redone: no longer true
                        json_path.unlink()
                    if _made_from(_read_record(previous), identity):  # a dead run's claim, taken over
                        previous.unlink()
                    claims.stems[i] = stem
            atomic.remove_temporaries_of(self.out, {p.name for stem in claims.stems.values()
                                                    for p in (*_output_paths(stem), _claim_path(stem))})
        return claims

    def _recorded_stems(self) -> dict[str, list[Path]]:
        """Output stems with a JSON or a claim in the folder (one listing), under each image stem they may belong
        to: ``photo_3.detecture`` under ``photo_3`` and ``photo``, its record says which. A hidden
        ``.photo.detecture.claim`` may be a claim on ``photo.detecture`` (:func:`_claim_paths`) or on
        ``photo.detecture.detecture``: both are listed."""
        suffix = f"{OUTPUT_TAG}.json"
        bases: set[str] = set()
        with os.scandir(self.out) as entries:
            for entry in entries:
                if entry.name.endswith(suffix):
                    bases.add(entry.name[:-len(suffix)])
                elif entry.name.startswith(".") and entry.name.endswith(CLAIM_SUFFIX):
                    base = entry.name[1:-len(CLAIM_SUFFIX)]
                    bases.add(base)
                    if base.endswith(OUTPUT_TAG):
                        bases.add(base[:-len(OUTPUT_TAG)])
        recorded: dict[str, list[Path]] = {}
        for base in sorted(bases):
            stem = self.out / (base + OUTPUT_TAG)
            recorded.setdefault(base, []).append(stem)
            root, sep, number = base.rpartition("_")
            if sep and number.isdigit():
                recorded.setdefault(root, []).append(stem)
        return recorded

    def _previous(self, stems: list[Path], identity: dict, taken: set[Path]) -> tuple[str, Path | None]:
        """Among ``stems``, an output this input already has: ``done`` (complete, same settings), ``busy`` (another
        live run's claim), ``replaced`` (complete, made with other settings: redone in place, and the run says so) or
        ``free`` (stale, a dead run's claim, or ``--force``: redone in place); ``free, None`` when there is none."""
        found: dict[str, Path] = {}
        for stem in stems:
            png, json_path = _output_paths(stem)
            if stem in taken or png in self.inputs or json_path in self.inputs:
                continue
            # the JSON first: one there is finished (a claimant removes it), whatever claim its run left behind
            record = next((r for r in map(_read_record, (json_path, *_claim_paths(stem))) if _made_from(r, identity)),
                          None)
            if record is None:
                continue
            if "claim" in record:
                verdict = "busy" if record["claim"] != self.owner and is_alive(record["claim"]) else "free"
            else:
                complete = record["input"] == identity and png.exists()
                if complete and record.get("settings") != self.settings:
                    verdict = "replaced"
                else:
                    verdict = "done" if complete and not self.force else "free"
            found.setdefault(verdict, stem)
        for verdict in ("done", "busy", "replaced", "free"):
            if verdict in found:
                return verdict, found[verdict]
        return "free", None

    def _drop_dead_claims(self, stem: Path, identity: dict) -> None:
        """Remove the claims on ``stem``'s input a run killed between writing its JSON and dropping its claim left
        beside the finished output."""
        for claim in _claim_paths(stem):
            record = _read_record(claim)
            if _made_from(record, identity) and "claim" in record and not is_alive(record["claim"]):
                claim.unlink(missing_ok=True)

    def _fresh(self, name: str, n: int, taken: set[Path]) -> Path:
        """The first stem from ``name_n`` on that is no input and none of whose files exists."""
        while True:
            stem = self.out / (name + (f"_{n}" if n > 1 else "") + OUTPUT_TAG)
            paths = _output_paths(stem)
            if stem not in taken and not any(p in self.inputs or os.path.lexists(p) for p in paths) \
                    and not any(os.path.lexists(claim) for claim in _claim_paths(stem)):
                return stem
            n += 1

    def release(self, stem: Path) -> None:
        """Drop this run's claim on ``stem`` once its image is finished, failed or stopped, with the overlay (and
        any half-written temporary) of an output left unfinished, so the name is free again; a finished output is
        left alone. Under the folder lock and only while the claim names this run: a ``--force`` run may have claimed
        the name since its JSON was written, and its claim is its own."""
        png, json_path = _output_paths(stem)
        claim = _claim_path(stem)
        with folder_lock(self.out):
            record = _read_record(claim)
            if record is not None and record.get("claim") == self.owner:
                if not json_path.exists():  # and the temporaries of a write a stopped worker left half done
                    png.unlink(missing_ok=True)
                    atomic.remove_temporaries_of(self.out, {png.name, json_path.name})
                claim.unlink(missing_ok=True)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _read_record(json_path: Path) -> dict | None:
    """The JSON object at ``json_path``; None when there is none, it cannot be read, or it is no JSON object (a
    file of the user's that happens to have an output's name)."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _made_from(record: dict | None, identity: dict) -> bool:
    """Whether ``record`` (an output's JSON or a claim) names the input file of ``identity`` (any version of it)."""
    made_from = record.get("input") if record else None
    return isinstance(made_from, dict) and made_from.get("path") == identity["path"]


def result_record(path: Path, result: SegmentationResult, regime: Regime, labels: np.ndarray,
                  note: str | None = None, made_by: dict | None = None, frame: dict | None = None) -> dict:
    """The JSON record of one image: the response, and per region its description, area and RLE mask.

    ``size`` and the masks are in the upright frame (the EXIF orientation applied, as ``PIL.ImageOps.exif_transpose``
    does, and as viewers and the overlay show the photo); ``frame`` (:func:`~detecture.images.stored_frame`) adds
    the orientation applied and the size as stored, so a reader of the file's raw pixels can map them back."""
    total = labels.size
    counts = np.bincount(labels.ravel(), minlength=result.num_regions + 1)
    regions = []
    for k, description in enumerate(result.descriptions, 1):
        regions.append({"index": k, "description": description, "pixels": int(counts[k]),
                        "area_fraction": float(counts[k] / total), "rle": rle.encode(labels == k)})
    record = {
        "image": printable(path), "size": [int(labels.shape[0]), int(labels.shape[1])], **(frame or {}),
        "method": result.meta.get("method", "detecture"),
        "regime": {"kind": regime.kind, "count": regime.count, "query": regime.text},
        "grounding": result.meta.get("grounding"), "response": result.response,
        "unassigned_fraction": float(counts[0] / total), "regions": regions,
        "contract": result.meta.get("contract"),
    }
    if note:
        record["note"] = note
    if made_by:
        record.update(made_by)  # "input" and "settings": what a re-run compares to skip finished work
    return record


def write_outputs(stem: Path, path: Path, image: np.ndarray, result: SegmentationResult, regime: Regime,
                  note: str | None = None, settings: dict | None = None, frame: dict | None = None) -> dict:
    """Write ``<stem>.png`` (overlay + legend), then ``<stem>.json`` (a stem claimed with :class:`OutputFolder`),
    which marks the pair complete; return the row the summary table prints. The claim is the claimant's to drop
    (:meth:`OutputFolder.release`): this may run in a worker process, which is not the claim's owner."""
    labels = result.label_map
    made_by = {"input": input_identity(path), "settings": settings} if settings is not None else None
    record = result_record(path, result, regime, labels, note, made_by, frame)
    png, json_path = _output_paths(stem)
    save_overlay(png, image, labels, result.descriptions, title=printable(path.name), note=note)
    atomic.write_json(json_path, record)
    return {"image": printable(path.name), "regions": record["regions"], "json": json_path}


TABLE_WIDTH = 120  # characters of a summary line; a description is cut to what the other columns leave


def print_table(rows: list[dict]) -> None:
    """The summary of a run, one line per region: the image, its output name (``brick_2`` for
    ``brick_2.detecture.png`` / ``.json``, so that two images of one name are told apart), K, area and description.
    Text too long for its column ends in an ellipsis, so a cut is never read as the whole. No rows print nothing
    (every image failed or was already done): a header over an empty table reads as a lost result."""
    if not rows:
        return
    names = [(row["image"], _output_name(row["json"])) for row in rows]
    image_width = min(max([len("image"), *(len(image) for image, _ in names)]), 28)
    output_width = min(max([len("output"), *(len(output) for _, output in names)]), 28)
    description_width = max(TABLE_WIDTH - image_width - output_width - 14, 30)
    print(f"{'image':<{image_width}}  {'output':<{output_width}} {'k':>2} {'area':>6}  description")
    for row, (image, output) in zip(rows, names):
        lead = f"{_cut(image, image_width):<{image_width}}  {_cut(output, output_width):<{output_width}}"
        if not row["regions"]:
            print(f"{lead} {'-':>2} {'-':>6}  (no texture region found)")
        for region in row["regions"]:
            description = _cut(region["description"] or "(no description)", description_width)
            print(f"{lead} {region['index']:>2} {region['area_fraction']:>6.1%}  {description}")


def _output_name(json_path: Path) -> str:
    """``brick_2`` for ``brick_2.detecture.json``: the part of an output's file names that differs per image."""
    return printable(json_path.name.removesuffix(f"{OUTPUT_TAG}.json"))


def _cut(text: str, width: int) -> str:
    """``text`` within ``width`` characters, ending in an ellipsis where it was cut ("..." when standard output
    cannot encode "…")."""
    if len(text) <= width:
        return text
    mark = "…"
    try:
        mark.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        mark = "..."
    return text[:width - len(mark)].rstrip() + mark
