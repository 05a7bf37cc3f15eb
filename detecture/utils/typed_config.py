"""Typed YAML configs: every key has a declared type, checked by pydantic, and a bad value is one ``error:`` line.

Why pydantic (v2) dataclasses: they validate nested sections, ``tuple``/``dict``/``Literal`` fields and unknown keys
from the type hints alone, yet stay plain dataclasses, so the rest of the code keeps ``cfg.optim.lr``,
``dataclasses.replace`` and ``asdict``. Coercion is deliberately narrow: a number written as a string is read as that
number (YAML 1.1 reads ``5e-5`` without a dot as the string ``"5e-5"``) and ``20.0`` is the integer 20, but ``9.5``
for an integer key, ``true`` for a number, ``1`` for a flag, ``fast`` for a learning rate are errors, reported as
``configs/train.yaml: optim.lr: expected a number, got 'fast'``.

A config class is declared with :func:`config_class` and uses :data:`Number`, :data:`Integer` and :data:`Flag` for
scalars (plain ``str``/``Literal``/``tuple``/``dict`` hints work as they are); :func:`parse_config` builds it from
parsed YAML plus dotted ``--set`` overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from typing import Annotated, Any, Callable, TypeVar

import yaml
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError, ValidationInfo
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticCustomError

from ..errors import InputError

T = TypeVar("T")

_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")


def _numbers_as_text(info: ValidationInfo) -> bool:
    """Numeric strings are read as numbers only in YAML (1.1 reads ``5e-5`` as a string); JSON has real numbers,
    so a quoted ``"32"`` there is a wrongly typed value."""
    return not (info.context or {}).get("json", False)


def _number(value: Any, info: ValidationInfo) -> float:
    if isinstance(value, str) and _numbers_as_text(info) and _NUMBER_TEXT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PydanticCustomError("detecture_type", "expected a number")
    return float(value)


def _integer(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, str) and _numbers_as_text(info) and _INTEGER_TEXT.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("detecture_type", "expected an integer")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise PydanticCustomError("detecture_type", "expected true or false")
    return value


Number = Annotated[float, BeforeValidator(_number)]
"""A finite float; an int or a numeric string (``"5e-5"``) is converted, anything else (``True``, ``"fast"``) is not."""
Integer = Annotated[int, BeforeValidator(_integer)]
"""An int; ``20.0`` and ``"20"`` are converted, ``9.5`` and ``True`` are errors."""
Flag = Annotated[bool, BeforeValidator(_flag)]
"""``true`` / ``false`` only (YAML's yes/no/on/off are already booleans when parsed)."""
# Ranges are pydantic's own constraints, e.g. ``Annotated[Integer, Field(ge=1)]``: "expected at least 1, got 0".

_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def config_class(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """Declare a config section: a pydantic dataclass that rejects unknown keys (``@config_class`` or with args)."""

    def wrap(c: type[T]) -> type[T]:
        return pydantic_dataclass(c, config=_CONFIG, frozen=frozen)

    return wrap(cls) if cls is not None else wrap


_MESSAGES: dict[str, Callable[[dict[str, Any]], str]] = {
    "string_type": lambda e: "expected a string",
    "dict_type": lambda e: "expected a mapping",
    "dataclass_type": lambda e: "expected a mapping",
    "list_type": lambda e: "expected a list",
    "tuple_type": lambda e: "expected a list",
    "literal_error": lambda e: f"expected {e['ctx']['expected']}",
    "too_long": lambda e: f"expected {e['ctx']['max_length']} value(s)",
    "too_short": lambda e: f"expected {e['ctx']['min_length']} value(s)",
    "greater_than_equal": lambda e: f"expected at least {e['ctx']['ge']}",
    "greater_than": lambda e: f"expected more than {e['ctx']['gt']}",
    "less_than_equal": lambda e: f"expected at most {e['ctx']['le']}",
    "less_than": lambda e: f"expected less than {e['ctx']['lt']}",
    "missing": lambda e: "missing key",
    "missing_argument": lambda e: "missing key",
}
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def _known_keys(cls: type, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that holds ``loc`` (for an unknown-key message)."""
    for part in loc[:-1]:
        hints = typing.get_type_hints(cls)
        cls = hints.get(part) if isinstance(part, str) else None
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return []
    return [f.name for f in dataclasses.fields(cls)]


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


def format_error(error: dict[str, Any], cls: type) -> str:
    """One error of a :class:`ValidationError` as ``key.path: what was expected, got <value>``."""
    loc = tuple(error["loc"])
    if error["type"] in _UNKNOWN:
        known = _known_keys(cls, loc)
        return f"{_dotted(loc)}: unknown key" + (f" (known: {', '.join(known)})" if known else "")
    make = _MESSAGES.get(error["type"])
    message = make(error) if make else error["msg"].removeprefix("Value error, ")
    if error["type"] in ("missing", "missing_argument"):
        return f"{_dotted(loc)}: " + ("missing value" if loc and isinstance(loc[-1], int) else message)
    return f"{_dotted(loc)}: {message}, got {error['input']!r}"


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``"a.b"``, creating sections; a scalar in the way is an error."""
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {dotted}: '{key}' is not a section")
    node[leaf] = value


def parse_override(pair: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``; the value uses YAML syntax (``true``, ``[1, 2]``, ``null``, ``5e-5``)."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set expects KEY=VALUE, got {pair!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key.strip()}: not a valid YAML value: {value!r}") from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    """Building a validator costs milliseconds per class: once per process is enough."""
    return TypeAdapter(cls)


def parse_config(cls: type[T], data: Any, source: str, overrides: dict[str, Any] | None = None, *,
                 json: bool = False) -> T:
    """Build ``cls`` from parsed YAML ``data`` (``None`` = all defaults) and dotted ``overrides``; ``json``: data
    read from JSON, where a number written as a string is an error.

    Errors name where the bad value came from (``source``, or ``--set KEY`` for an override) and the key path.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    overrides = overrides or {}
    for dotted, value in overrides.items():
        set_dotted(data, dotted, value)
    try:
        return _adapter(cls).validate_python(data, context={"json": json})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        path = _dotted(tuple(first["loc"]))
        overridden = any(path == k or path.startswith((k + ".", k + "[")) for k in overrides)
        # a section only an override reaches into (`--set foo.bar=1` makes an unknown `foo`) is that override's
        inside = next((k for k in overrides if path and k.startswith(path + ".")), None)
        origin = "--set " if overridden else f"--set {inside}: " if inside else f"{source}: "
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{origin}{format_error(first, cls)}{more}") from None
