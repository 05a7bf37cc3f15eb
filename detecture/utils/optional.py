"""Optional accelerated backends (bitsandbytes, flash-attn) are imported only by the runs that use them.

PEFT imports bitsandbytes whenever it is installed (at import, and again when it wraps layers, to check for 4/8-bit
ones); on CPUs with AVX512-BF16 that import logs a "No module named 'kernels'" warning on every ``train`` run, and it
costs seconds, for a backend only quantized runs use. :func:`peft_for` runs PEFT code with bitsandbytes hidden
unless the model is quantized.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator


@contextmanager
def hidden_modules(*names: str) -> Iterator[None]:
    """Installed but unimported packages look absent inside the block: a ``None`` entry in ``sys.modules`` makes
    ``import name`` raise ImportError and ``importlib.util.find_spec(name)`` return None. Already imported ones
    stay visible (hiding them would only confuse their users)."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _forget_availability(module: ModuleType) -> None:
    """PEFT memoizes "is bitsandbytes available" (``functools.lru_cache``): drop answers given while it was hidden,
    so a later quantized model in the same process still finds it."""
    for value in vars(module).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@contextmanager
def peft_for(quantized: bool) -> Iterator[ModuleType]:
    """``with peft_for(quantized) as peft:`` — the ``peft`` module, with bitsandbytes loaded only for a quantized
    (QLoRA) model. ``transformers`` is imported first, outside the block, so its own package table (filled once per
    process) still lists bitsandbytes for a later quantized load."""
    import transformers  # noqa: F401

    if quantized:
        import peft

        yield peft
        return
    with hidden_modules("bitsandbytes"):
        import peft
        import peft.import_utils

        try:
            yield peft
        finally:
            _forget_availability(peft.import_utils)
