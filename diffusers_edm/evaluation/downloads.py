# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Files fetched once from a URL into the Hugging Face cache folder (`$HF_HOME/diffusers_edm/<kind>/`): the Inception
detector and reference statistics given by URL."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from huggingface_hub import constants

from ..environment import offline
from ..errors import DownloadError


def is_url(text: str) -> bool:
    """Whether `text` is an http(s) URL."""
    return urllib.parse.urlparse(text).scheme in ("http", "https")


def cache_folder(kind: str) -> Path:
    """`$HF_HOME/diffusers_edm/<kind>` (by default `~/.cache/huggingface/diffusers_edm/<kind>`)."""
    return Path(constants.HF_HOME) / "diffusers_edm" / kind


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_download(url: str, kind: str, flag: str, sha256: str | None = None) -> Path:
    """
    The local copy of `url` in [`cache_folder`]`(kind)`, downloaded on first use (to a temporary file, checked, then
    renamed, so an interrupted download never leaves a partial file in place).

    Args:
        url (`str`): the file's URL; the cached file is named by a digest of the whole URL and its last component.
        kind (`str`): cache sub-folder, e.g. "detectors".
        flag (`str`): the command-line flag that takes a local copy instead, named in errors.
        sha256 (`str`, *optional*): expected checksum of the file, checked after the download and on every later use.
            Without it, the checksum of the first download is recorded next to the file and later uses are checked
            against that record (a truncated or altered cache file is an error, not a wrong result).

    Raises:
        DownloadError: offline mode is on and the file is not cached, the download failed, or the checksum differs.
    """
    # Keyed by the whole URL: two URLs with the same file name (e.g. the same statistics file name on two servers) are
    # two cache entries.
    name = f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{Path(urllib.parse.urlparse(url).path).name or 'download'}"
    path = cache_folder(kind) / name
    record = path.with_name(name + ".sha256")
    if not path.is_file():
        if offline():
            raise DownloadError(f"{url} is not in the cache ({path}) and HF_HUB_OFFLINE is set; download it on a"
                                f" machine with internet and pass the file with {flag} PATH.")
        _download(url, path, flag, sha256)
        record.write_text(sha256_of(path) + "\n", encoding="utf-8")
    expected = sha256 or (record.read_text(encoding="utf-8").strip() if record.is_file() else None)
    if expected is not None:
        check_sha256(path, expected, f"The cached copy of {url} ({path})", flag)
    return path


def check_sha256(path: str | os.PathLike, expected: str, what: str, flag: str) -> None:
    """Raises a [`DownloadError`] when the file's SHA-256 is not `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise DownloadError(f"{what} has SHA-256 {actual}, expected {expected}: it is not the expected file (delete"
                            f" it to download it again, or pass a correct copy with {flag} PATH).")


def _download(url: str, path: Path, flag: str, sha256: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(staging, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError, ValueError) as error:
        staging.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DownloadError(f"Could not download {url} ({reason}); download it on a machine with internet and pass"
                            f" the file with {flag} PATH.") from error
    if sha256 is not None:
        try:
            check_sha256(staging, sha256, f"The download of {url}", flag)
        except DownloadError:
            staging.unlink(missing_ok=True)
            raise
    os.replace(staging, path)
