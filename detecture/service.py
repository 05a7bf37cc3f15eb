"""The one segmentation service behind every entry point: a typed request in, one ``SegmentationResult`` per image out.

The CLI (``detecture segment``), the Python API (``detecture.segment``) and the demo only turn their user's input
into a :class:`SegmentRequest` and draw or write what comes back. Every rule about *what* to run is decided here,
once: which methods exist, how ``k`` / ``query`` become a :class:`~detecture.prompts.Regime`, that a query needs the
VLM, which options belong to which method, the default hub ids, the default grounding, the teacher-forced responses
of tiny backbones, and how a failed model load is explained. So the three entry points give identical results for
the same request (``tests/test_service.py`` checks it).
"""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from .backbones import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAM3, TINY_NAME
from .errors import IgnoredByTiny, InputError, ModelAccessError, NotServed
from .prompts import Regime, RegimeKind, format_response, user_prompt

if TYPE_CHECKING:
    from PIL import Image

    from .classical import ClassicalParams
    from .pipeline import DetecturePipeline
    from .result import SegmentationResult

logger = logging.getLogger(__name__)

METHODS = ("classical", "detecture")
GROUNDINGS = ("auto", "bridge", "text")
CLASSICAL_SEED = 0
TINY_NOTE = "tiny random backbones: this output is meaningless (it only shows the pipeline runs)"
OFFLINE_HINT = "to segment without models, use --method classical (CPU, no weights)"
BRIDGE_NEEDS_HEAD = ("--grounding bridge needs a trained head (--head PATH); use --grounding text for zero-shot "
                     "results with the public weights")
QUERY_NEEDS_VLM = ("a query needs the detecture method: the classical segmenter finds regions, it cannot read a "
                   "phrase")

# The request fields that serve one method only, and that method: the options that choose, load and ground with the
# VLM pipeline, and the classical segmenter's settings. Given (other than their default) for the other method they
# are refused rather than ignored; the CLI checks the same fields first, to name them by its options.
METHOD_FIELDS = {**dict.fromkeys(("head", "qwen", "sam3", "device", "dtype", "quantization", "attn_implementation",
                                  "trust_remote_code", "max_new_tokens", "tiny", "grounding"), "detecture"),
                 "classical_params": "classical"}
# The request fields that name or load the real backbones. Tiny random ones are built from a fixed seed on the CPU,
# teacher-forced (load_pipeline, segment), so none of these reaches them: given with ``tiny`` they are refused rather
# than ignored; the CLI and the demo check the same fields first, to name them by their options.
TINY_IGNORES = ("qwen", "sam3", "device", "dtype", "quantization", "attn_implementation", "trust_remote_code",
                "max_new_tokens")

# Loading options and head folder -> (the head files' signature when loaded, the pipeline): one pipeline per key, so
# a head rewritten in place replaces its old pipeline instead of keeping both loaded.
_PIPELINES: dict[tuple, tuple[tuple, "DetecturePipeline"]] = {}


def check_max_new_tokens(value: Any, name: str = "max_new_tokens") -> None:
    """Refuse a token budget that is no whole number of at least 1 (``None``: the default), naming it as the caller
    set it: the field for the API, ``--max-new-tokens`` for the command line."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True)
class SegmentRequest:
    """What to segment with and how; every field has the meaning it has on the command line.

    ``k`` is the number of regions: an integer 1..6 (or its text), or ``None`` / ``"auto"`` to let the method choose.
    ``query`` asks for the one region matching a phrase (detecture only; excludes ``k``). ``grounding`` is ``auto``
    (bridge when a head is loaded, else text), ``bridge`` or ``text``. Model options left at ``None`` take the
    defaults (``qwen``: the Qwen the head was trained on, else :data:`~detecture.backbones.DEFAULT_QWEN`, ``sam3``:
    :data:`~detecture.backbones.DEFAULT_SAM3`,
    ``max_new_tokens``: :data:`~detecture.backbones.DEFAULT_MAX_NEW_TOKENS`); the classical method refuses any that
    is given, and a ``grounding`` other than ``auto``, rather than ignore it, as ``tiny`` refuses those its tiny
    random backbones leave unread (:data:`TINY_IGNORES`).
    ``classical_params`` are the classical segmenter's settings: a :class:`~detecture.classical.ClassicalParams`, or
    the path of a YAML file of its fields (read and checked here, before any image); ``None`` for the tuned defaults.
    """

    method: Literal["classical", "detecture"]
    k: int | str | None = None
    query: str | None = None
    grounding: Literal["auto", "bridge", "text"] = "auto"
    seed: int = CLASSICAL_SEED
    classical_params: ClassicalParams | str | os.PathLike | None = None
    head: str | os.PathLike | None = None
    qwen: str | os.PathLike | None = None
    sam3: str | os.PathLike | None = None
    device: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    max_new_tokens: int | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        """Refuse a request that cannot run, before any image is read or any model loads."""
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.grounding not in GROUNDINGS:
            raise InputError(f"grounding must be one of {', '.join(GROUNDINGS)}, got {self.grounding!r}")
        check_max_new_tokens(self.max_new_tokens)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**32:
            raise InputError(f"seed must be a whole number from 0 to 2**32 - 1 (as numpy and scikit-learn take "
                             f"it), got {self.seed!r}")
        regime = self.regime  # k / query are checked here, once
        if self.method == "classical" and regime.kind is RegimeKind.QUERY:
            raise InputError(QUERY_NEEDS_VLM)
        given = self._given([name for name, method in METHOD_FIELDS.items() if method != self.method])
        if given:
            raise NotServed(given, "method", METHOD_FIELDS[given[0]], [self.method])
        if self.tiny:
            ignored = self._given(TINY_IGNORES)
            if ignored:
                raise IgnoredByTiny(ignored, "tiny=True")
        if self.classical_params is not None:
            from .classical import ClassicalParams, load_params

            if isinstance(self.classical_params, (str, os.PathLike)):
                object.__setattr__(self, "classical_params", load_params(self.classical_params))
            elif not isinstance(self.classical_params, ClassicalParams):
                raise InputError("classical_params must be a ClassicalParams or the path of a YAML file of its "
                                 f"fields, got {type(self.classical_params).__name__}")

    def _given(self, names: Sequence[str]) -> list[str]:
        """Those of the fields ``names`` the caller set: holding something other than ``None``, off or the field's
        default."""
        defaults = {f.name: f.default for f in fields(self)}
        return [name for name in names if getattr(self, name) not in (None, False, defaults[name])]

    @property
    def regime(self) -> Regime:
        """The regime ``k`` and ``query`` ask for: a query, exactly k regions, or 1 to 6 for ``None`` / ``auto``."""
        if self.query is not None:
            if Regime.from_k(self.k).kind is not RegimeKind.AUTONOMOUS:
                raise InputError("give either k or query, not both")
            return Regime.query(self.query)
        return Regime.from_k(self.k)

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`DetecturePipeline.from_pretrained` (defaults filled in here, once; reads the
        head's config when ``qwen`` is left to it)."""
        qwen = self.qwen or (TINY_NAME if self.tiny else None)
        if qwen is None:
            from .bridge.head import default_qwen, read_head_config  # torch: only for the detecture method

            qwen = default_qwen(read_head_config(self.head) if self.head is not None else None, self.head)
        return {"qwen": qwen, "sam3": self.sam3 or DEFAULT_SAM3, "head": self.head,
                "device": self.device, "dtype": self.dtype, "quantization": self.quantization,
                "attn_implementation": self.attn_implementation, "trust_remote_code": self.trust_remote_code,
                "max_new_tokens": self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS}

    @classmethod
    def from_options(cls, method: str, **options: Any) -> "SegmentRequest":
        """A request from keyword options, naming any unknown one (``detecture.segment(..., qwn=...)``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known - {'method'}))}")
        return cls(method=method, **options)


def check_before_loading(request: SegmentRequest) -> None:
    """Refuse, from the request and its head's config alone, what the loaded models would refuse for every image
    minutes later: bridge grounding without a head (tiny backbones always carry one), a regime the head's prompt
    set has no wording for (the published head has no query prompt) and, for bridge grounding, a K beyond the head's
    slots; a bad head folder is its own error. The CLI
    calls it with its cheap checks, :func:`load_pipeline` before it loads. Nothing to check for the classical
    method, which loads no model."""
    if request.method != "detecture":
        return
    if request.grounding == "bridge" and request.head is None and not request.tiny:
        raise InputError(BRIDGE_NEEDS_HEAD)
    if request.head is not None:
        from .bridge.head import default_qwen, read_head_config  # torch: only when a head is named

        config = read_head_config(request.head)
        if request.qwen is None and not request.tiny:
            default_qwen(config, request.head)  # refuses a head trained on tiny backbones
        user_prompt(request.regime, config.effective_contract.prompts)
        k = request.regime.exact_k
        if k is not None and request.grounding != "text" and k > config.max_regions:
            raise InputError(f"{request.head}: the head has room for {config.max_regions} regions (num_slots "
                             f"{config.num_slots}), fewer than the {k} asked for; ask for at most {config.max_regions} "
                             "or use text grounding")


def check_image(name: str | os.PathLike, width: int, height: int, request: SegmentRequest,
                alternative: str | None = None) -> None:
    """The shape rules for an image ``request`` is to segment: at least 2 x 2 px for every method
    (:func:`~detecture.images.check_size`), and for the detecture method a side at most 200 times the other
    (:func:`~detecture.images.check_aspect`, whose refusal points at the classical method in the words of
    ``alternative``, by default segment's option). :class:`InputError` naming ``name`` otherwise."""
    from .images import CLASSICAL_OPTION, check_aspect, check_size

    check_size(name, width, height)
    if request.method == "detecture":
        check_aspect(name, width, height, alternative or CLASSICAL_OPTION)


def check_image_file(path: str | os.PathLike, request: SegmentRequest) -> None:
    """Check an image file for ``request`` from its header alone (readable, not a decompression bomb, the
    :func:`check_image` shape rules), so a batch reports its bad files before any model loads; decoding errors
    further in the file still surface when it is read."""
    from .images import open_image

    with open_image(path) as im:
        width, height = im.size
    check_image(path, width, height, request)


def as_image_array(image: "str | os.PathLike | Image.Image | np.ndarray") -> np.ndarray:
    """(H, W, 3) uint8 from a path, a PIL image or an array (the forms notebooks hold images in)."""
    from .images import as_rgb_array, load_image

    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    return as_rgb_array(image)


def forced_tiny_responses(regime: Regime, count: int) -> list[str]:
    """Teacher-forced texture lines for tiny random backbones, whose own generations contain none (3 regions when
    the method decides K)."""
    if regime.kind is RegimeKind.QUERY:
        descriptions = [f"Texture matching '{regime.text}' (tiny model placeholder)"]
    else:
        descriptions = [f"Texture of region {i} (tiny model placeholder)" for i in range(1, (regime.exact_k or 3) + 1)]
    return [format_response(descriptions)] * count


def segment_classical(image: np.ndarray, regime: Regime, seed: int = CLASSICAL_SEED,
                      params: "ClassicalParams | None" = None) -> "SegmentationResult":
    """Classical segmentation of an (H, W, 3) uint8 array as a :class:`SegmentationResult` with measured descriptions.

    ``params`` are the segmenter's settings (``None``: its tuned defaults). The logits are kept at the resolution the
    segmenter returns; the result's static dustbin at 0 partitions them exactly as the benchmark scores them.
    """
    from .classical import segment_texture
    from .classical.describe import describe_regions
    from .result import SegmentationResult
    from .utils.image_ops import partition
    from .utils.parallel import one_thread

    if regime.kind is RegimeKind.QUERY:
        raise InputError(QUERY_NEEDS_VLM)
    with one_thread():  # the same partition in a notebook, the demo and `segment --workers N`
        logits = np.ascontiguousarray(segment_texture(image, regime.exact_k, seed=seed, params=params), dtype=np.float32)
    # A channel that wins no pixel stays, described as empty, so K matches what was asked (but for an image with no
    # texture at all, which the segmenter returns as one region whatever K).
    descriptions = describe_regions(image, partition(logits), logits.shape[0])
    return SegmentationResult(descriptions=descriptions, response=format_response(descriptions),
                              region_logits=logits,
                              image_size=(int(image.shape[0]), int(image.shape[1])),
                              meta={"method": "classical", "grounding": None})


def _head_files(head: str | os.PathLike | None) -> tuple[str | None, tuple]:
    """The head folder's resolved path and each of its files' stat signature, so a head rewritten in place
    (retrained into the same folder) is told apart from the one it replaced: loaded again instead of its old
    weights being kept. A stat signature is enough for this cache of one process (``bench`` records the content,
    :func:`~detecture.bridge.head.head_digest`)."""
    if head is None:
        return None, ()
    from .utils.paths import resolved

    root = resolved(head)
    stats = {str(p.relative_to(root)): p.stat() for p in sorted(root.rglob("*")) if p.is_file()}
    return str(root), tuple((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in stats.items())


def load_pipeline(request: SegmentRequest, offline_hint: str | None = OFFLINE_HINT) -> "DetecturePipeline":
    """The VLM pipeline a request names, loaded once per distinct set of loading options (and state of the head
    folder's files) and kept for later calls (reloading an 8B model per image would dominate a session). A failed
    load ends with ``offline_hint``, the offline method in the words of the caller (``--method classical`` is
    segment's option; ``None`` for a caller that says it its own way)."""
    import torch

    from .pipeline import DetecturePipeline

    # Tiny backbones are built from a fixed seed whatever the hub options say: only the head tells two apart.
    options = None if request.tiny else request.load_options()
    root, signature = _head_files(request.head)
    key = ("tiny", root) if options is None else (*sorted((n, str(v)) for n, v in options.items()), root)
    if key in _PIPELINES:
        if _PIPELINES[key][0] == signature:
            return _PIPELINES[key][1]
        del _PIPELINES[key]  # the head was rewritten: free the old pipeline before loading the new one
    check_before_loading(request)
    if request.tiny:
        logger.warning(TINY_NOTE)
        pipeline = DetecturePipeline.tiny(head=request.head)
    else:
        hint = f"; {offline_hint}" if offline_hint else ""
        try:
            pipeline = DetecturePipeline.from_pretrained(**options)
        except ModelAccessError as exc:
            raise ModelAccessError(f"{exc}{hint}") from None
        except torch.OutOfMemoryError:
            raise ModelAccessError("not enough memory to load Qwen3-VL + SAM3 (try --quantization 4bit, a smaller "
                                   f"--qwen, or another --device){hint}") from None
    _PIPELINES[key] = (signature, pipeline)
    return pipeline


def grounding_for(request: SegmentRequest, pipeline: "DetecturePipeline") -> str:
    """``auto`` grounds through the Bridge when a head is loaded (tiny backbones always carry one), else by text."""
    if request.grounding != "auto":
        return request.grounding
    return "bridge" if pipeline.head is not None else "text"


def segment(images: Sequence[np.ndarray], request: SegmentRequest, pipeline: "DetecturePipeline | None" = None,
            names: Sequence[str | os.PathLike] | None = None) -> list["SegmentationResult"]:
    """Segment (H, W, 3) uint8 arrays as the request says; one result per image, in order.

    ``pipeline`` is an already loaded VLM pipeline to use (the demo and the CLI load it once up front); without it
    the request's own is loaded (and cached). The classical method takes no pipeline. ``names`` (one per image) are
    what a refusal of an image's shape calls it; without them, its place in ``images``.
    """
    regime = request.regime
    if request.method == "classical":
        if pipeline is not None:
            raise InputError("a loaded pipeline applies to method 'detecture' only")
        return [segment_classical(image, regime, seed=request.seed, params=request.classical_params)
                for image in images]
    if names is None:
        names = [f"image {i}" for i in range(1, len(images) + 1)] if len(images) > 1 else ["image"]
    for name, image in zip(names, images):
        check_image(name, image.shape[1], image.shape[0], request)
    pipe = pipeline if pipeline is not None else load_pipeline(request)
    forced = forced_tiny_responses(regime, len(images)) if pipe.tiny else None
    return pipe.segment(list(images), regime, grounding_for(request, pipe), forced)


def segment_one(image: "str | os.PathLike | Image.Image | np.ndarray", request: SegmentRequest,
                pipeline: "DetecturePipeline | None" = None) -> "SegmentationResult":
    """:func:`segment` for one image in any form :func:`as_image_array` reads; a refusal names the file."""
    array = as_image_array(image)
    name = image if isinstance(image, (str, os.PathLike)) else "image array" if isinstance(image, np.ndarray) \
        else "PIL image"
    return segment([array], request, pipeline, [name])[0]

