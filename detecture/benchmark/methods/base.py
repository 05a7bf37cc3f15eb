"""The one interface every benchmarked method implements, and the options the CLI can pass to any of them.

A method turns an (H, W, 3) uint8 image into K logit maps at input resolution plus K descriptions; the benchmark
then scores those logits through :mod:`detecture.benchmark.metrics` exactly the same way for everyone. Heavy weights
are loaded in :meth:`Method.load` and dropped in :meth:`Method.close`, so the runner holds one model at a time.
"""

from __future__ import annotations

import gc
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InputError, MethodError
from ...utils.image_ops import MAX_REGIONS
from ..model_keys import TINY_METHODS
from ..regimes import SampleRegime

if TYPE_CHECKING:
    from ...classical import ClassicalParams
    from ...data.metadata import SampleRecord


def check_region_count(count: int, what: str = "method output") -> None:
    """Refuse more regions than a partition can label (:data:`MAX_REGIONS`): that sample's failure, raised before
    anything K x H x W is allocated for them where the caller can count first (a precomputed label map)."""
    if count > MAX_REGIONS:
        raise MethodError(f"{what} has {count} regions; at most {MAX_REGIONS} can be scored")


@dataclass
class MethodOutput:
    """(K, H, W) float32 logits (region k wins a pixel where its logit is the largest and > 0) and K descriptions."""

    logits: np.ndarray
    descriptions: list[str] = field(default_factory=list)
    # (K, h, w) logits at the model's own resolution, when it has one: the published protocol upsamples these itself
    model_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        if self.logits.ndim != 3:
            raise MethodError(f"method returned logits of shape {self.logits.shape}; expected (K, H, W)")
        check_region_count(self.logits.shape[0])
        if np.isnan(self.logits).any():  # NaN never wins a comparison: it would pass silently as "unassigned"
            raise MethodError("method returned NaN logits")
        if len(self.descriptions) < self.logits.shape[0]:
            self.descriptions = list(self.descriptions) + [""] * (self.logits.shape[0] - len(self.descriptions))


@dataclass
class MethodOptions:
    """Everything a method may need from the command line; each method reads only its own fields."""

    device: str | None = None
    tiny: bool = False
    trust_remote_code: bool = False
    models: dict[str, str] = field(default_factory=dict)
    head: str | None = None
    prompt: str | None = None
    seed: int = 0
    classical_params: ClassicalParams | None = None  # None: the classical segmenter's tuned defaults


class Method(ABC):
    """Base class: ``kind`` selects the dispatch-table row, ``name`` labels the results (they differ for peers)."""

    kind: str = ""

    def __init__(self, options: MethodOptions, name: str | None = None) -> None:
        self.options = options
        self.name = name or self.kind
        self.loaded: dict[str, Any] = {}

    @property
    def random_backbones(self) -> bool:
        """Whether this run's outputs come from tiny random backbones (``--tiny`` on a method that reads it,
        :data:`~detecture.benchmark.model_keys.TINY_METHODS`): the reports mark such results, whose numbers say
        nothing about the method."""
        return self.kind in TINY_METHODS and self.options.tiny

    def check(self) -> None:
        """Cheap prerequisite checks (permissions, paths, optional packages), run for every method before the first
        model loads, so a run of several methods cannot fail on the last one after hours on the others."""

    def models(self) -> dict[str, str]:
        """The models :meth:`load` reads (what it is, as the load's errors name it → hub id or folder), for
        :meth:`check_models`; none by default."""
        return {}

    def check_models(self) -> None:
        """Refuse, with :meth:`check`, a model that cannot load while the hub is out of reach (offline and not in
        the local cache): a later method of a run would otherwise fail to load after the earlier ones were scored."""
        models = self.models()
        if models:
            from ...backbones.loading import check_loadable

            for what, repo in models.items():
                check_loadable(what, repo)

    def check_records(self, dataset: str, records: list[SampleRecord]) -> None:
        """Checks against the records a cell will segment, run with :meth:`check` before the first model loads, for
        a problem that would otherwise pass silently sample by sample; nothing to check by default."""

    def input_digest(self, record: SampleRecord) -> str | None:
        """A digest of what the method reads for ``record`` besides the dataset's files (a precomputed prediction),
        or ``None`` when it reads nothing else. The runner records it with the sample's result and scores the sample
        again once it differs, as it does when the sample's own files change: a result must belong to the input
        that made it."""
        return None

    def load(self) -> None:
        """Load weights into :attr:`loaded` (no-op for weightless methods)."""

    def settings(self) -> dict[str, Any]:
        """What, besides the method's name, decides its outputs (JSON-serialisable). The runner records it with each
        cell and refuses to resume a cell scored under other settings, so results of two settings never mix."""
        return {}

    @abstractmethod
    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        """Segment one image under the given regime."""

    def close(self) -> None:
        """Drop references to weights and return accelerator memory (torch's cache only where torch was loaded: a
        weightless method's run never imports it)."""
        self.loaded.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def model_id(self, key: str, default: str) -> str:
        """A configurable model id or local path (``--model key=ID``; the keys each method reads are listed in
        :data:`~detecture.benchmark.model_keys.MODEL_KEYS`, which refuses any other)."""
        return self.options.models.get(key, default)

    def requested_k(self, regime: SampleRegime) -> int:
        """K for modes that need a count: the oracle K, or K_gt where the dispatch table grants that concession."""
        if regime.k is not None:
            return regime.k
        if regime.mode == "top-k-gt":
            return regime.k_gt
        raise InputError(f"{self.name}: dispatch mode {regime.mode!r} needs a K but the regime gives none")


def torch_device(options: MethodOptions) -> str:
    """The device a torch method runs on: ``--device`` if given, else CUDA when available, else CPU."""
    if options.device:
        return options.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
