"""The decoded-image cache of `build_dataset`, for datasets larger than memory (and, with float32 items, the latent
cache of VAE training).

The selected training images are decoded once into a uint8 `[N, C, H, W]` `.npy` file and then read back one image
per access with `os.preadv`, never through a memory map, so a process's resident memory does not grow with the images
it reads (the operating system's page cache keeps the hot part of the file fast). A cache is two files in one folder:

* `<name>-<fingerprint>.npy`: the images;
* `<name>-<fingerprint>.json`: the fingerprint, the shape, the SHA-256 of the images file and the warnings logged
  while decoding, written last so its presence marks a complete cache.

`<name>` identifies the source and the preparation (path or dataset id, resolution, center crop, subset), the
fingerprint also covers the content (the bytes of every image file, zip member CRCs, the `datasets` fingerprint) and
the selected images. Both files are written under staging names and moved into place with `os.replace`, so a
half-written cache is never used; a complete cache for the same `<name>` replaces older ones. Every use reads the
images file once to check its SHA-256, so a cache altered in a shared folder is rebuilt, never trained on; a path that
is not a regular file (e.g. a FIFO) is never opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import uuid
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
"""Changes whenever the decoding or the cache format changes, so that caches written by another version are rebuilt
(2: content fingerprints and the images file's SHA-256)."""


def default_decoded_cache_dir() -> Path:
    """`$HF_HOME/diffusers_edm/decoded` (`~/.cache/huggingface/diffusers_edm/decoded` by default)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "diffusers_edm" / "decoded"


def digest(value: object) -> str:
    """SHA-256 hex digest of a JSON-serialisable value (bytes are hashed as they are)."""
    data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def _is_regular_file(path: Path) -> bool:
    """Whether `path` is a regular file (not a FIFO, device or folder, which opening could block on or misread)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    digest_ = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest_.update(chunk)
    return digest_.hexdigest()


ITEM_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
"""What a cache file may hold: uint8 images, float32 latents."""


def _read_npy_header(path: str) -> tuple[tuple[int, ...], int, np.dtype]:
    """Shape, data offset and dtype of a C-ordered uint8 or float32 `.npy` file."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
        if fortran_order or dtype not in ITEM_DTYPES:
            raise ValueError(f"{path} does not hold C-ordered uint8 images or float32 latents.")
        return shape, file.tell(), dtype


class DecodedImageFile:
    """uint8 `[N, C, H, W]` images (or float32 latents) in an `.npy` file, read one item per access.

    The file stays open while the object lives; a forked DataLoader worker shares the descriptor (positional reads do
    not interfere), and a pickled copy (a spawned worker) carries only the path and reopens it, never the images.

    Args:
        path (`str` or `Path`): The `.npy` file.

    Attributes:
        sha256 (`str`, *optional*): the file's checksum, when it came from a [`DecodedCache`] (which checked it).
        info (`dict`): what the cache recorded with the items (e.g. the latent statistics).
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.shape, self._offset, self.dtype = _read_npy_header(self.path)
        self.sha256: str | None = None
        self.info: dict = {}
        self._fd: int | None = None
        self._open()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    @property
    def file_size(self) -> int:
        """Bytes the file must have: header and every item."""
        return self._offset + int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        image = np.empty(self.shape[1:], dtype=self.dtype)
        read = os.preadv(self._open(), [image], self._offset + index * image.nbytes)
        if read != image.nbytes:
            raise OSError(f"{self.path} ends within image {index}; delete it to have it rebuilt.")
        return torch.from_numpy(image)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class DecodedImageWriter:
    """Writes images in order into a staging `.npy` file; `DecodedCache.commit` moves it into place.

    Args:
        staging_path (`Path`): Where to write; a second staging file next to it is used by `widen_to_rgb`.
        count (`int`): Number of images that will be appended.
    """

    def __init__(self, staging_path: Path, count: int):
        self.path, self.count, self.written = staging_path, count, 0
        self.shape: tuple[int, int, int, int] | None = None
        self._file = None
        self._hash = hashlib.sha256()

    def allocate(self, channels: int, height: int, width: int, dtype: np.dtype = np.uint8) -> None:
        """Starts the file for `count` items of `[channels, height, width]` (uint8 images or float32 latents)."""
        self.shape = (self.count, channels, height, width)
        self._file = open(self.path, "wb")
        self._hash = hashlib.sha256()
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": self.shape,
        }
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header)
        self._write(buffer.getvalue())

    def append(self, image: np.ndarray) -> None:
        """Appends one `[C, H, W]` item of the allocated dtype."""
        self._write(np.ascontiguousarray(image).data)
        self.written += 1

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)

    @property
    def sha256(self) -> str:
        """SHA-256 of everything written (the whole file once finished)."""
        return self._hash.hexdigest()

    def widen_to_rgb(self) -> None:
        """Rewrites the grayscale images written so far with three channels (each a copy of the gray values)."""
        self._file.close()
        grayscale_path, self.path = self.path, self.path.with_name(self.path.name + "-rgb")
        grayscale = DecodedImageFile(grayscale_path)
        written = self.written
        self.written = 0
        self.allocate(3, *self.shape[2:])
        for index in range(written):
            self.append(np.repeat(grayscale[index].numpy(), 3, axis=0))
        del grayscale
        grayscale_path.unlink()

    def finish(self) -> None:
        """Flushes the file to disk."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        """Removes the staging file (after an error), also when closing it fails (a full disk fails the final
        flush)."""
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        finally:
            self.path.unlink(missing_ok=True)


class DecodedCache:
    """The cache files of one source and preparation in `folder`.

    Args:
        folder (`Path`): The cache folder (created when a cache is written).
        source (`str`): Identifies the source and its preparation; the start of the file names is derived from it.
        label (`str`): A readable hint of the source (e.g. the folder name), put at the start of the file names.
    """

    def __init__(self, folder: Path, source: str, label: str):
        self.folder = folder
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")[:40] or "data"
        self.name = f"{readable}-{digest(source)[:16]}"

    def _path(self, fingerprint: str, suffix: str) -> Path:
        return self.folder / f"{self.name}-{fingerprint[:16]}{suffix}"

    def load(self, fingerprint: str) -> tuple[DecodedImageFile, list[str]] | None:
        """The complete cache with this fingerprint and the warnings logged when it was written, else `None`; the
        file's `sha256` and `info` are those recorded."""
        meta_path, images_path = self._path(fingerprint, ".json"), self._path(fingerprint, ".npy")
        if not _is_regular_file(meta_path):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not _is_regular_file(images_path):
                raise ValueError("the image file is missing or not a regular file")
            images = DecodedImageFile(images_path)
            if meta["fingerprint"] != fingerprint or list(images.shape) != meta["shape"]:
                raise ValueError("the cache belongs to other data")
            if os.path.getsize(images.path) != images.file_size:
                raise ValueError("the image file has the wrong size")
            if file_sha256(images_path) != meta["sha256"]:
                raise ValueError("the image file does not match its checksum: it was altered or is corrupt")
            images.sha256, images.info = meta["sha256"], dict(meta.get("info", {}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("Ignoring the cache %s (%s); preparing the items again.", meta_path, error)
            return None
        return images, list(meta["warnings"])

    def writer(self, fingerprint: str, count: int) -> DecodedImageWriter:
        """A writer of `count` images to a staging file of this cache (creating the folder)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return DecodedImageWriter(self._staging(self._path(fingerprint, ".npy")), count)

    def commit(self, writer: DecodedImageWriter, fingerprint: str, warnings: list[str],
               info: dict | None = None) -> DecodedImageFile:
        """Moves the written items into place, then writes the metadata that marks the cache complete (with `info`,
        JSON values recorded with the items), and removes older caches of the same source."""
        writer.finish()
        images_path, meta_path = self._path(fingerprint, ".npy"), self._path(fingerprint, ".json")
        os.replace(writer.path, images_path)
        staging_meta = self._staging(meta_path)
        meta = {
            "fingerprint": fingerprint,
            "shape": list(writer.shape),
            "sha256": writer.sha256,
            "warnings": warnings,
            "format_version": CACHE_FORMAT_VERSION,
            "info": info or {},
        }
        try:
            staging_meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
            os.replace(staging_meta, meta_path)
        finally:
            staging_meta.unlink(missing_ok=True)
        images = DecodedImageFile(images_path)
        images.sha256, images.info = writer.sha256, dict(info or {})
        self._remove_older(fingerprint)
        return images

    def _remove_older(self, fingerprint: str) -> None:
        """Deletes this source's complete caches with other fingerprints (readers that have them open keep them)."""
        current = {self._path(fingerprint, ".npy"), self._path(fingerprint, ".json")}
        pattern = re.compile(re.escape(self.name) + r"-[0-9a-f]{16}\.(npy|json)")
        for path in self.folder.iterdir():
            if path not in current and pattern.fullmatch(path.name):
                path.unlink(missing_ok=True)

    @staticmethod
    def _staging(path: Path) -> Path:
        """A name for writing `path` that no other process uses and that `load` never reads."""
        return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
