"""Exceptions whose message is meant for the user as-is (the CLI prints it on one line, no traceback)."""

from __future__ import annotations

from typing import Sequence


class DetectureError(Exception):
    """Base class: anything raised as a DetectureError is a user-facing, actionable problem."""


class InputError(DetectureError):
    """A user-supplied file or argument is unusable (corrupt image, bad K, empty query, ...)."""


class DatasetError(DetectureError):
    """A dataset folder or metadata file does not match the expected layout or schema."""


class CheckpointError(DetectureError):
    """A checkpoint is missing, malformed, or was trained for different backbones."""


class ModelAccessError(DetectureError):
    """A backbone could not be loaded from the hub or disk (gated model, no token, offline, wrong id)."""


class RunStopped(DetectureError):
    """A run stopped unfinished once its work had begun: by an environment fault (disk full, unwritable output, out
    of memory; the message names the path and the cause), or by a cause met on the way that no single item is to blame
    for (``train``'s NaN guard, a later ``bench`` method's model that will not load). The work finished is kept and
    nothing half-done was recorded, so the same command run again, once the cause is fixed, finishes the work."""


class MethodError(DetectureError):
    """A method's output for one sample is unusable (wrong shape, NaN): that sample's failure, not the run's."""


class NotServed(InputError):
    """Options given for a mode they do not serve (a method, a layout, a describer): refused rather than ignored,
    since an ignored option lets the user believe it took effect. The one wording of that refusal, for the service's
    requests and every command: ``--workers applies to method 'classical' only, not to 'detecture'``."""

    def __init__(self, options: Sequence[str], kind: str, owner: str | Sequence[str], chosen: Sequence[str]) -> None:
        """``options`` serve ``kind`` ``owner`` (say method 'classical'), or each of the modes of ``owner`` where
        several read them (bench's ``--prompt``: ``to methods 'sam3' and 'grounding-sam3' only``); ``chosen`` are
        the modes the run has, none where the user selected none (``bench --methods ,``)."""
        owners = [owner] if isinstance(owner, str) else list(owner)
        verb = "applies" if len(options) == 1 else "apply"
        quoted = [f"'{mode}'" for mode in owners]
        served = f"{', '.join(quoted[:-1])} and {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        listed = ", ".join(f"'{mode}'" for mode in chosen)
        modes = f"not to {listed}" if chosen else f"and no {kind} is selected"
        super().__init__(f"{', '.join(options)} {verb} to {kind}{'s' if len(owners) > 1 else ''} {served} only, "
                         f"{modes}")


class IgnoredByTiny(InputError):
    """Options that choose or load the real backbones, given with tiny random ones (``--tiny``), which are built
    from a fixed seed whatever those options say: refused rather than ignored, as :class:`NotServed` refuses an
    option given for another mode. The one wording of that refusal, for the service's requests and every command:
    ``--qwen, --device apply to the real backbones only; --tiny builds tiny random ones instead``."""

    def __init__(self, options: Sequence[str], tiny: str = "--tiny") -> None:
        """``options`` as the user gave them; ``tiny`` names what asked for the tiny backbones (``--tiny``, a config
        key, the service's ``tiny`` field)."""
        verb = "applies" if len(options) == 1 else "apply"
        super().__init__(f"{', '.join(options)} {verb} to the real backbones only; {tiny} builds tiny random ones "
                         "instead")
