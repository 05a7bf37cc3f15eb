"""The two tables that define the protocol as data: dataset → K regime, and (method, regime) → how it is called.

Both are checked before any model loads (:func:`check_plan`), so a missing pair fails in a second, not after an hour
of loading weights. A regime is *oracle* (the method is told K; ``k=None`` means "this sample's K_gt") or
*autonomous* (nobody is told K; the dispatch table may grant a method a documented concession such as SAM3's top-K_gt).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..prompts import MAX_TEXTURES, Regime, RegimeKind

ORACLE = RegimeKind.ORACLE
AUTONOMOUS = RegimeKind.AUTONOMOUS
GIVEN_K = "given-k"


@dataclass(frozen=True)
class RegimeSpec:
    """A dataset's K regime; ``k`` is the fixed K an oracle regime announces (``None`` = each sample's K_gt)."""

    kind: RegimeKind
    k: int | None = None

    def label(self) -> str:
        if self.kind == AUTONOMOUS:
            return "autonomous"
        return f"oracle K={self.k if self.k is not None else 'K_gt'}"


@dataclass(frozen=True)
class SampleRegime:
    """What one method call is told: the regime kind, the K it may use (``None`` when autonomous), the dispatch mode,
    and K_gt (which only a method whose dispatch mode is a documented concession may read); and which sample it is,
    its record id and image file stem, by which a precomputed method finds its file."""

    kind: RegimeKind
    k: int | None
    k_gt: int
    mode: str
    sample_id: str = ""
    image_stem: str = ""

    @property
    def exact_k(self) -> int | None:
        """The K a method asks for exactly (its dispatch mode is ``given-k``); ``None`` when it decides K itself."""
        return self.k if self.mode == GIVEN_K else None

    def as_regime(self) -> Regime:
        """The same request as the pipeline's :class:`~detecture.prompts.Regime` (what a VLM method is prompted)."""
        return Regime.oracle(self.exact_k) if self.exact_k is not None else Regime.autonomous()


# Dataset (lower-case canonical name) → regime (docs/ARCHITECTURE.md, Benchmark protocol; Outex is K = 5 throughout).
REGIMES: dict[str, RegimeSpec] = {
    "rwtd": RegimeSpec(ORACLE, 2),
    "stld": RegimeSpec(ORACLE, 2),
    "ade20k_detecture": RegimeSpec(AUTONOMOUS),
    "caid": RegimeSpec(ORACLE, 1),
    "outex": RegimeSpec(ORACLE, 5),
}
DEFAULT_REGIME = RegimeSpec(ORACLE, None)

# Dispatch modes, interpreted by the methods:
#   given-k          the method is asked for exactly K regions (prompt "exactly N", or K clusters)
#   open-k           the method decides K itself (prompt "between 1 and 6", or model selection)
#   single-prompt    one text prompt: top-1 instance for K = 1, inverse-mask trick for K = 2, top-K instances beyond
#   top-k-gt         one text prompt, keep the K_gt best instances (SAM3's one concession in the autonomous regime)
#   top-k-boxes      detector boxes ranked by score, the K best prompted into SAM3
#   detector-boxes   every detector box above threshold (at most 6) prompted into SAM3
#   largest-k        automatic mask generation, keep the K largest non-overlapping masks
#   all-masks        automatic mask generation, keep up to 6 masks (largest first)
#   precomputed      read a stored label map
DISPATCH: dict[tuple[str, str], str] = {
    ("detecture", ORACLE): GIVEN_K,
    ("detecture", AUTONOMOUS): "open-k",
    ("detecture-text", ORACLE): GIVEN_K,
    ("detecture-text", AUTONOMOUS): "open-k",
    ("sam3", ORACLE): "single-prompt",
    ("sam3", AUTONOMOUS): "top-k-gt",
    ("grounding-sam3", ORACLE): "top-k-boxes",
    ("grounding-sam3", AUTONOMOUS): "detector-boxes",
    ("texturesam", ORACLE): "largest-k",
    ("texturesam", AUTONOMOUS): "all-masks",
    ("sa2va", ORACLE): GIVEN_K,
    ("sa2va", AUTONOMOUS): "open-k",
    ("classical", ORACLE): GIVEN_K,
    ("classical", AUTONOMOUS): "open-k",
    ("predictions", ORACLE): "precomputed",
    ("predictions", AUTONOMOUS): "precomputed",
}


def regime_for(dataset: str, explicit: RegimeSpec | None = None) -> RegimeSpec:
    """The regime of a dataset: an ``explicit`` choice (the ``--regime`` option) always wins, since the user asked
    for it and the report shows it; otherwise the table's protocol for a known dataset, else oracle K_gt."""
    return explicit or REGIMES.get(dataset.lower()) or DEFAULT_REGIME


def parse_regime(text: str) -> RegimeSpec:
    """Parse ``--regime``: ``autonomous`` (or ``auto``), ``oracle`` (K_gt per sample) or ``oracle:N`` (or ``N``).
    The short forms are those ``segment --k`` takes, so the same words mean the same regime in both commands."""
    text = text.strip().lower()
    if text in (AUTONOMOUS, "auto"):
        return RegimeSpec(AUTONOMOUS)
    if text == ORACLE:
        return RegimeSpec(ORACLE)
    count = text.removeprefix(ORACLE + ":").strip()
    if count != text or count.isdigit():  # oracle:N, or a bare N
        k = int(count) if count.isdigit() else 0
        if not 1 <= k <= MAX_TEXTURES:
            raise InputError(f"--regime {text!r}: K must be an integer from 1 to {MAX_TEXTURES}")
        return RegimeSpec(ORACLE, k)
    raise InputError(f"--regime {text!r}: expected 'autonomous' (or 'auto'), 'oracle', or 'oracle:N' (or N) with N "
                     f"from 1 to {MAX_TEXTURES}")


def dispatch_mode(method_kind: str, regime: RegimeSpec) -> str:
    """The dispatch mode for a method kind under a regime; a missing pair is an error naming both."""
    try:
        return DISPATCH[(method_kind, regime.kind)]
    except KeyError:
        raise InputError(f"no dispatch rule for method {method_kind!r} in the {regime.kind} regime") from None


def check_plan(pairs: list[tuple[str, str, RegimeSpec]]) -> None:
    """Check every (method kind, dataset, regime) cell has a dispatch rule before anything is loaded."""
    missing = [f"{m} × {d} ({r.kind})" for m, d, r in pairs if (m, r.kind) not in DISPATCH]
    if missing:
        raise InputError("no dispatch rule for: " + ", ".join(missing))
