# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Writing output folders safely: a folder is built under a temporary name next to its target and renamed into place
only when complete, and `overwrite` may replace a folder only when it holds none of the inputs, the current directory
or a parent of either. The converter and the post-hoc EMA reconstruction write their pipelines this way."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from .errors import OUT_OF_SPACE, WRITE_ERRORS, OutputFolderError


def check_output_dir(output_dir: Path, overwrite: bool, kept: Sequence[tuple[Path, str]] = ()) -> None:
    """Refuses, before any work, an output path that is a file (or lies below one) or a symbolic link, a non-empty
    folder without `overwrite`, and with `overwrite` a folder that is or holds one of the `kept` paths (each with a
    description, e.g. `(checkpoint, "the snapshot")`) or the current directory, which replacing it would delete.

    Raises:
        OutputFolderError: naming the path and what to pass instead.
    """
    if output_dir.is_symlink():
        raise OutputFolderError(
            f"{output_dir} is a symbolic link; pass the folder it points to ({output_dir.resolve()}) or a new folder."
        )
    existing = next((path for path in (output_dir, *output_dir.parents) if path.exists()), output_dir)
    if existing.exists() and not existing.is_dir():
        where = "" if existing == output_dir else f", so {output_dir} cannot be created"
        raise OutputFolderError(f"{existing} is a file{where}; pass a folder path for the output.")
    if existing != output_dir or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise OutputFolderError(
            f"{output_dir} already exists and is not empty; pass --overwrite (overwrite=True) to replace it as a whole,"
            " or choose a new folder."
        )
    target = output_dir.resolve()
    for path, what in (*kept, (Path.cwd(), "the current directory")):
        resolved = path.resolve()
        if resolved == target or target in resolved.parents:
            raise OutputFolderError(
                f"{output_dir} is or holds {what} ({path}), which --overwrite would delete; choose another output"
                " folder."
            )


@contextmanager
def staging_folder(output_dir: Path) -> Iterator[Path]:
    """A new temporary folder next to `output_dir` (on the same file system, so that it can be renamed into place),
    removed when the block fails. A full, read-only or forbidden disk becomes an [`OutputFolderError`]."""
    staging = None
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
        yield staging
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        code = _write_errno(error)
        if code in WRITE_ERRORS:
            advice = ("free some space or choose a folder on another disk" if code in OUT_OF_SPACE
                      else "choose a folder you can write to")
            raise OutputFolderError(f"cannot write {output_dir}: {WRITE_ERRORS[code]}; {advice}"
                                    f" ({errno.errorcode[code]}); nothing was left there.") from error
        raise


def move_into_place(staging: Path, output_dir: Path) -> None:
    """Renames the complete `staging` folder to `output_dir`. An existing `output_dir` ([`check_output_dir`] allowed
    it) is first renamed aside and deleted only once the new folder is in place, so no old file is mixed in."""
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    previous = staging.with_name(staging.name.replace(".partial-", ".previous-", 1))
    os.replace(output_dir, previous)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(previous, output_dir)
        raise
    shutil.rmtree(previous)


def _write_errno(error: BaseException) -> int | None:
    """The errno of a failed write: an OSError's, or the one safetensors' writer (whose errors are not OSErrors) puts
    in its message, e.g. "I/O error: No space left on device (os error 28)"."""
    if isinstance(error, OSError):
        return error.errno
    match = re.search(r"\(os error (\d+)\)", str(error)) if isinstance(error, SafetensorError) else None
    return int(match.group(1)) if match else None
