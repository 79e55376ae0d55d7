"""Publishing a training run's pipeline folder on the Hugging Face Hub in the background; failures warn and never stop
training."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import create_repo, hf_hub_download, upload_folder
from huggingface_hub.utils import filter_repo_objects

from ..environment import offline
from ..errors import TrainingError, first_line
from .model_card import merge_model_card

logger = logging.getLogger(__name__)

COMMAND_LINE_TOKEN_WARNING = (
    "--hub_token on the command line is visible to other users of this machine (ps, /proc) and accelerate launch "
    "prints the whole command line when a run fails; prefer HF_TOKEN, the cached login (`hf auth login`) or "
    "--hub_token_file.")

STAGING_FOLDER = ".hub-staging"
"""Folder inside the uploaded folder that holds the snapshots waiting for (or in) upload."""

UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "logs", "logs/**", "*.tmp", "*.tmp/**", "samples/**",
                          "eval-ref-*.npz", "phema", "phema/**", "training_config.json", STAGING_FOLDER,
                          f"{STAGING_FOLDER}/**"]
"""What is never uploaded: resumable training state, logs, half-written files, the intermediate sample grids, the
cached reference statistics of the evaluation, the post-hoc EMA snapshots, the raw settings (with local paths; the
card shows them without) and the upload snapshots."""


MAX_TOKEN_FILE_BYTES = 4096
"""A token file holds one token (about 40 characters); more than this is not a token file."""


def read_token_file(path: str) -> str:
    """The token in `path` (`--hub_token_file`), stripped of surrounding whitespace; never logged. The file must be a
    regular file of at most `MAX_TOKEN_FILE_BYTES`; one that other users can read gives a warning."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise TrainingError(f"--hub_token_file {path} is not a regular file; it must hold the token only.")
        with open(path, "rb") as file:
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TrainingError(f"--hub_token_file {path} is not a text file; it must hold the token only.") from None
    except OSError as error:
        raise TrainingError(f"--hub_token_file {path}: cannot read it ({error.strerror}).") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise TrainingError(f"--hub_token_file {path} is larger than a token file could be; it must hold the token"
                            " only.")
    if len(token.split()) > 1:
        raise TrainingError(f"--hub_token_file {path} holds more than one word; it must hold the token only.")
    if not token:
        raise TrainingError(f"--hub_token_file {path} is empty; it must hold the token (hf_...).")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("--hub_token_file %s can be read by other users of this machine; `chmod 600 %s`.", path, path)
    return token


def _files_to_upload(folder: Path) -> list[str]:
    """The relative POSIX paths of the files in `folder` that `UPLOAD_IGNORE_PATTERNS` lets through."""

    def kept(paths: list[str]) -> list[str]:
        return list(filter_repo_objects(paths, ignore_patterns=UPLOAD_IGNORE_PATTERNS))

    files = []
    for root, dirs, names in os.walk(folder):
        relative_root = Path(root).relative_to(folder)
        dirs[:] = [Path(d).name for d in kept([(relative_root / d).as_posix() for d in dirs])]
        files += kept([(relative_root / name).as_posix() for name in names])
    return files


@dataclass
class _Snapshot:
    """A copy of the files to upload, taken when `upload` was called."""

    folder: Path
    source: Path
    commit_message: str


class HubPublisher:
    """Creates the repository once and uploads snapshots of the output folder in the background.

    `upload` copies the files to upload into a snapshot (so the trainer may rewrite the folder at once) and returns;
    one worker thread uploads one snapshot at a time, and a newer snapshot replaces one still waiting. Before each
    upload, the model card is merged into the README.md on the Hub, so edits made there outside the generated section
    are kept. Failures are logged as warnings; call `close()` (or `wait()`) at the end of training to block until
    the last upload is done and learn whether it worked.

    Args:
        repo_id (`str`): the repository, e.g. "user/edm-digits".
        token (`str`, *optional*): a Hub token; `None` uses the usual resolution (HF_TOKEN, cached login). It is only
            passed to huggingface_hub calls, never logged.
        private (`bool`): create the repository as private.
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool = False) -> None:
        self._token = token
        try:
            self.repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
        except Exception as error:  # noqa: BLE001 - network, authentication or Hub errors: one line, before training
            hint = ("offline mode is on (HF_HUB_OFFLINE): unset it" if offline()
                    else "check the connection and the token")
            raise TrainingError(f"--push_to_hub: could not create or reach the Hub repository {repo_id}"
                                f" ({type(error).__name__}: {first_line(Exception(self._redact(error)))}); {hint}, or"
                                " drop --push_to_hub and upload the output folder later.") from None
        self._condition = threading.Condition()
        self._queued: _Snapshot | None = None
        self._uploading: _Snapshot | None = None
        self._last_ok = True
        self._closed = False
        self._worker: threading.Thread | None = None
        self._staging_roots: set[Path] = set()

    def upload(self, folder: str | Path, commit_message: str) -> bool:
        """Snapshots `folder` (without checkpoints or logs) and queues it for upload, replacing a snapshot that
        still waits; returns whether the snapshot was queued. Never blocks on the network."""
        if self._closed:
            raise RuntimeError("HubPublisher.upload() was called after close().")
        try:
            snapshot = self._stage(Path(folder), commit_message)
        except OSError as error:
            logger.warning("Could not snapshot %s for the upload to %s (%s); training goes on.", folder, self.repo_id,
                           error)
            return False
        with self._condition:
            superseded, self._queued = self._queued, snapshot
            self._start_worker()
            self._condition.notify_all()
        if superseded is not None:
            logger.info("Upload %r to %s superseded by %r.", superseded.commit_message, self.repo_id, commit_message)
            shutil.rmtree(superseded.folder, ignore_errors=True)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until no upload is queued or running (or `timeout` seconds passed); returns whether the last upload
        succeeded (`True` when nothing was uploaded) and warns when it did not."""
        with self._condition:
            idle = self._condition.wait_for(lambda: self._queued is None and self._uploading is None, timeout)
            ok = idle and self._last_ok
        if not idle:
            logger.warning("The upload to %s is still running after %gs.", self.repo_id, timeout)
        elif not ok:
            logger.warning("The last upload to %s failed; the local files are complete and can be uploaded again.",
                           self.repo_id)
        return ok

    def close(self, timeout: float | None = None) -> bool:
        """`wait()`s, stops the worker and removes the snapshot folders; returns whether the last upload succeeded."""
        ok = self.wait(timeout)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        if self._worker is None or not self._worker.is_alive():
            for root in self._staging_roots:
                shutil.rmtree(root, ignore_errors=True)
        return ok

    def _stage(self, folder: Path, commit_message: str) -> _Snapshot:
        """Copies the files of `folder` that are uploaded into a new snapshot folder under `folder/.hub-staging`."""
        files = list(_files_to_upload(folder))
        root = folder / STAGING_FOLDER
        root.mkdir(exist_ok=True)
        self._staging_roots.add(root)
        target = Path(tempfile.mkdtemp(prefix="snapshot-", dir=root))
        try:
            for relative in files:
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / relative, destination)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return _Snapshot(target, folder, commit_message)

    def _start_worker(self) -> None:
        """Starts the upload thread if it is not running (called with the condition held)."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name=f"hub-upload-{self.repo_id}", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        """The worker loop: uploads the queued snapshot, one at a time, until `close()`."""
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queued is not None or self._closed)
                if self._queued is None:
                    return
                snapshot, self._queued = self._queued, None
                self._uploading = snapshot
            ok = self._upload_snapshot(snapshot)
            shutil.rmtree(snapshot.folder, ignore_errors=True)
            with self._condition:
                self._uploading = None
                self._last_ok = ok
                self._condition.notify_all()

    def _upload_snapshot(self, snapshot: _Snapshot) -> bool:
        """Merges the card into the Hub's README.md and uploads the snapshot; returns whether it worked."""
        try:
            self._merge_hub_readme(snapshot.folder / "README.md")
            upload_folder(repo_id=self.repo_id, folder_path=str(snapshot.folder),
                          commit_message=snapshot.commit_message, ignore_patterns=UPLOAD_IGNORE_PATTERNS,
                          token=self._token)
        except Exception as error:  # noqa: BLE001 - any network or Hub failure must not end training
            logger.warning("Upload to %s failed (%s: %s); the local files in %s are unaffected and training goes on.",
                           self.repo_id, type(error).__name__, self._redact(error), snapshot.source)
            return False
        logger.info("Uploaded %r to %s.", snapshot.commit_message, self.repo_id)
        return True

    def _merge_hub_readme(self, card_path: Path) -> None:
        """Rewrites the snapshot's README.md as the merge of it into the README.md on the Hub, if there is one."""
        if not card_path.is_file():
            return
        hub_readme = self._hub_readme()
        if hub_readme is None:
            return
        try:
            merged = merge_model_card(hub_readme, card_path.read_text(encoding="utf-8"))
        except ValueError:  # not a card of write_model_card (no section markers): upload it as it is
            return
        card_path.write_text(merged, encoding="utf-8")

    def _hub_readme(self) -> str | None:
        """The README.md of the repository on the Hub; None when it has none or it cannot be fetched (offline)."""
        try:
            path = hf_hub_download(self.repo_id, "README.md", token=self._token)
            return Path(path).read_text(encoding="utf-8")
        except Exception as error:  # noqa: BLE001 - no README yet, offline or a Hub error: upload ours as it is
            logger.debug("No README.md fetched from %s (%s).", self.repo_id, type(error).__name__)
            return None

    def _redact(self, error: Exception) -> str:
        """The error message without the token."""
        message = str(error)
        return message.replace(self._token, "***") if self._token else message

    def __repr__(self) -> str:  # never show the token
        return f"HubPublisher(repo_id={self.repo_id!r})"
