"""Exceptions whose message is meant for the user as-is (the CLI prints it on one line, no traceback)."""

from __future__ import annotations


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
    """An environment fault (disk full, unwritable output, out of memory) stopped a run unfinished; the message names
    the path and the cause. Nothing half-done was recorded, so the same command run again finishes the work."""


class MethodError(DetectureError):
    """A method's output for one sample is unusable (wrong shape, NaN): that sample's failure, not the run's."""
