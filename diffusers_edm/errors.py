# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Every error type of diffusers-edm, and the one-line form in which the command-line tools report them.

Each error below is a mistake the user can fix (a flag, a file, a folder, a full disk), so its message says what is
wrong and what to do. They are `ValueError`s: code that called the library before these types existed keeps catching
them. The command-line tools turn them into one line, `<tool>: error: <message>`, and exit with status 2.
"""

from __future__ import annotations

import errno
import pickle

# --- the errors ----------------------------------------------------------------------------------------------------


class EDMInputError(ValueError):
    """Base class: a mistake in the inputs (settings, files, folders) that the message explains how to fix."""


class DatasetError(EDMInputError):
    """The training or reference data cannot be used as configured; the message names the offending file."""


class TrainingError(EDMInputError):
    """A mistake in a training run's settings, files or environment."""


class CheckpointError(TrainingError):
    """A training checkpoint cannot be written, found or resumed from; the message names the file and the way out."""


class EvaluationError(EDMInputError):
    """A mistake in the inputs of an evaluation (images, reference statistics, detector, model)."""


class ImageSourceError(EvaluationError):
    """Images to score cannot be read or used as given."""


class DetectorError(EvaluationError):
    """A feature detector cannot be loaded or used."""


class DownloadError(EvaluationError):
    """A file could not be fetched or failed its checksum; the message names the URL and the local-copy flag."""


class ReferenceStatisticsError(EvaluationError):
    """A reference statistics file is missing, unreadable or malformed."""


class UnsafeCheckpointError(pickle.UnpicklingError, EDMInputError):
    """A pickle references code that an EDM snapshot never needs (e.g. `os.system`), or a tensor that does not fit its
    storage. Nothing from the file has been executed when it is raised."""


class OutputFolderError(EDMInputError):
    """An output folder cannot be written where asked (a file, a non-empty folder without `overwrite`, a folder that
    `overwrite` would wrongly delete, or a full or read-only disk); nothing was left at the target."""


class VerificationFailedError(EDMInputError):
    """The converter's `verify=True` found a problem; nothing was written to the target. `report` holds the checks
    (a `VerificationReport`)."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class ReconstructionError(EDMInputError):
    """Post-hoc EMA cannot be reconstructed from the run folder as asked."""


# --- reporting -----------------------------------------------------------------------------------------------------


def one_line(error: BaseException | str) -> str:
    """The message of `error` with its whitespace (newlines included) collapsed to single spaces; the type name of an
    exception without a message."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for wrapping a library's long,
    multi-line message into one of ours."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
"""The errors of a full or unwritable disk, by errno: causes the user can fix, reported in one line with the path."""

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The causes that more room fixes (the others need another folder or other permissions)."""


def write_error_reason(error: OSError) -> str:
    """E.g. "no space left on device" for the errors of a full or unwritable disk, else the system's message."""
    return WRITE_ERRORS.get(error.errno, error.strerror or str(error))
