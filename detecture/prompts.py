"""The conversation Detecture has with Qwen3-VL: count regimes, prompts, and the response line format.

The response format is the interface between the language model and the Bridge: one line per texture region,
``TEXTURE_k: <description> <|seg|>``. The hidden state at each ``<|seg|>`` token is what the Bridge grounds.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import InputError
from .prompt_sets import DEFAULT_PROMPT_SET, PromptSet, prompt_set
from .utils.paths import printable

SEG_TOKEN = "<|seg|>"
MAX_TEXTURES = 6

# Detecture's own prompts live in detecture/prompt_sets/detecture.yaml; a head may carry another set (its contract).
SYSTEM_PROMPT = prompt_set(DEFAULT_PROMPT_SET).system

_MARKER_RE = re.compile(r"TEXTURE_\d+\s*:")
# The written form of Qwen's control tokens (<|im_end|>, <|image_pad|>, <|seg|>, ...): the tokenizer turns such text
# into the token itself, so a user's words must not hold it.
_CONTROL_TOKEN_RE = re.compile(r"<\|\w+\|>")


def is_unicode_text(text: str) -> bool:
    """Whether ``text`` is text UTF-8 can hold: a command-line argument whose bytes are not UTF-8 (a Latin-1
    terminal's ``café``) reaches Python with lone surrogates in their place, which no tokenizer reads and no JSON
    record can be written with."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def control_token_in(text: str) -> str | None:
    """The first control-token text (``<|seg|>``, ``<|im_end|>``, ...) in ``text``, or ``None``.

    Such text is tokenised as the token itself, so words holding it would change the conversation: a query would
    carry an extra image placeholder or end the turn, and a training description an extra ``<|seg|>`` that moves
    every later region's state."""
    control = _CONTROL_TOKEN_RE.search(text)
    return control.group() if control else None


class RegimeKind(StrEnum):
    """The three ways of saying how many regions to find; the one vocabulary of the model, the CLI and the benchmark.

    A ``StrEnum`` so a kind is written to JSON and compared with prompt-set keys as its plain word.
    """

    AUTONOMOUS = "autonomous"  # the method decides K (1..6); the CLI's ``--k auto``
    ORACLE = "oracle"  # the method is told K
    QUERY = "query"  # the one region matching a phrase


def is_k(count: object) -> bool:
    """Whether ``count`` is a K a model can be told: a whole number (not a bool) from 1 to :data:`MAX_TEXTURES`."""
    return isinstance(count, numbers.Integral) and not isinstance(count, bool) and 1 <= count <= MAX_TEXTURES


@dataclass(frozen=True)
class Regime:
    """How many regions the model is asked for: autonomous (1..6), oracle (exactly N), or a user query (1)."""

    kind: RegimeKind
    count: int | None = None
    text: str | None = None

    @staticmethod
    def autonomous() -> "Regime":
        return Regime(RegimeKind.AUTONOMOUS)

    @staticmethod
    def oracle(count: int) -> "Regime":
        """Exactly ``count`` regions, as code asks for them; a user's K goes through :meth:`from_k`."""
        if not is_k(count):
            raise InputError(f"K must be an integer from 1 to {MAX_TEXTURES}, got {count!r}")
        return Regime(RegimeKind.ORACLE, count=int(count))

    @staticmethod
    def query(text: str) -> "Regime":
        if not isinstance(text, str) or not text.strip():
            raise InputError("the query is empty; describe the texture to find, e.g. --query 'the rough bark'")
        if not is_unicode_text(text):
            raise InputError(f"the query '{printable(text)}' is not valid UTF-8 text (bytes of another encoding, such "
                             "as Latin-1); give it in UTF-8")
        control = control_token_in(text)
        if control:
            raise InputError(f"the query holds {control!r}, the text of one of the model's control tokens; "
                             "describe the texture in plain words")
        return Regime(RegimeKind.QUERY, text=" ".join(text.split()))

    @staticmethod
    def from_k(value: int | str | None, name: str = "k") -> "Regime":
        """The regime a user's K asks for: ``None`` or ``'auto'`` for 1 to 6, else exactly that many, given as an
        integer or as its digits (the command line, the demo's dropdown and a JSON request all hold text). A bool or
        a float is refused, not read as 1 or truncated. ``name`` is what the user set K by, for the refusal: the
        field ``k`` of the API and the service, ``--k`` on the command line."""
        if value is None or isinstance(value, str) and value.strip().lower() in ("auto", "autonomous"):
            return Regime.autonomous()
        count: object = value
        if isinstance(value, str):
            try:
                count = int(value)
            except ValueError:
                count = None
        if not is_k(count):
            raise InputError(f"{name} must be 'auto' or an integer from 1 to {MAX_TEXTURES}, got {value!r}")
        return Regime(RegimeKind.ORACLE, count=int(count))

    @property
    def exact_k(self) -> int | None:
        """The K a method is told to find exactly; ``None`` when it decides K itself (autonomous, query)."""
        return self.count if self.kind is RegimeKind.ORACLE else None

    @property
    def max_regions(self) -> int:
        return {RegimeKind.AUTONOMOUS: MAX_TEXTURES, RegimeKind.ORACLE: self.count, RegimeKind.QUERY: 1}[self.kind]


def user_prompt(regime: Regime, prompts: PromptSet | None = None) -> str:
    """The user turn's text for a regime in a prompt set (default: Detecture's own; the image is attached
    separately by the processor)."""
    prompts = prompts or prompt_set(DEFAULT_PROMPT_SET)
    return prompts.user_prompt(regime.kind, regime.count, regime.text)


def format_response(descriptions: list[str]) -> str:
    """The assistant target for the given region descriptions (also used to force a response)."""
    if not 1 <= len(descriptions) <= MAX_TEXTURES:
        raise InputError(f"a response needs 1 to {MAX_TEXTURES} regions, got {len(descriptions)}")
    return "\n".join(f"TEXTURE_{k}: {' '.join(d.split())} {SEG_TOKEN}" for k, d in enumerate(descriptions, 1))


def parse_response(text: str, require_seg: bool = True) -> list[str]:
    """Descriptions of the texture entries, in order; text outside an entry is ignored.

    Each ``<|seg|>`` closes one entry, and its description is the text before it back to the previous ``<|seg|>``:
    from the last ``TEXTURE_k:`` there, or, without one, the last non-blank line. So with ``require_seg`` there is
    exactly one description per token, in the order the Bridge grounds the tokens' states, also when generation is
    malformed: a doubled token gets an empty description instead of moving the next entry's words onto its mask,
    and two entries on one line are two. Text grounding needs only the words, so it takes every entry that has
    some, also ``TEXTURE_k:`` entries no token closes (each to the end of its line): a model whose ``<|seg|>`` rows
    were never trained may leave the token out.
    """
    descriptions = []
    *closed, trailing = text.split(SEG_TOKEN)
    for chunk, is_closed in [(c, True) for c in closed] + [(trailing, False)]:
        starts = [m.start() for m in _MARKER_RE.finditer(chunk)]
        bodies = [_MARKER_RE.sub("", chunk[a:b], count=1) for a, b in zip(starts, starts[1:] + [len(chunk)])]
        if is_closed:  # the last entry is the token's; without a marker, the line the token ends
            lines = [line for line in chunk.splitlines() if line.strip()]
            own = bodies.pop() if bodies else lines[-1] if lines else ""
        if not require_seg:
            descriptions += [words for words in (" ".join(b.split("\n", 1)[0].split()) for b in bodies) if words]
        if is_closed and (require_seg or own.strip()):
            descriptions.append(" ".join(own.split()))
    return descriptions
