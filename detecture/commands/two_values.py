"""One setting given by two spellings (``--qwen`` and convert's older ``--base``, bench's ``--qwen`` and
``--model qwen=``, train's ``--qwen`` and ``--set model.qwen=``): different values are refused, since keeping either
would silently ignore the other; the same value given both ways is one value. Every command words it alike."""

from __future__ import annotations

from ..errors import InputError


def refuse_two_values(setting: str, first: tuple[str, object], second: tuple[str, object]) -> None:
    """Raise :class:`~detecture.errors.InputError` if ``first`` and ``second``, each (a spelling as the user typed it,
    value included: ``--set model.qwen=Qwen/B``; the value it gives), give ``setting`` different values. The
    message names both spellings, so the user sees which two to reconcile. A spelling not given is no spelling: the
    caller passes only the two that were."""
    (typed, value), (other_typed, other_value) = first, second
    if value != other_value:
        raise InputError(f"{typed} and {other_typed} give two values for {setting}; give one")
