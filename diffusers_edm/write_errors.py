# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The errors of a full or unwritable disk, which the converter and training report in one line (with the path and
what to do) instead of a traceback."""

from __future__ import annotations

import errno

WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
"""The causes the user can fix, by errno."""

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The causes that more room fixes (the others need another folder or other permissions)."""


def write_error_reason(error: OSError) -> str:
    """E.g. "no space left on device" for the errors of a full or unwritable disk, else the system's message."""
    return WRITE_ERRORS.get(error.errno, error.strerror or str(error))
