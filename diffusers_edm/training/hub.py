"""Publishing a training run's pipeline folder on the Hugging Face Hub; failures warn and never stop training."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import create_repo, upload_folder

from .args import TrainingError

logger = logging.getLogger(__name__)

COMMAND_LINE_TOKEN_WARNING = (
    "--hub_token on the command line is visible to other users of this machine (ps, /proc) and accelerate launch "
    "prints the whole command line when a run fails; prefer HF_TOKEN, the cached login (`hf auth login`) or "
    "--hub_token_file.")

UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "logs", "logs/**", "*.tmp", "*.tmp/**", "samples/**",
                          "eval-ref-*.npz"]
"""What is never uploaded: resumable training state, logs, half-written files, the intermediate sample grids and the
cached reference statistics of the evaluation."""


def read_token_file(path: str) -> str:
    """The token in `path` (`--hub_token_file`), stripped of surrounding whitespace; never logged."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise TrainingError(f"--hub_token_file {path} is not a text file; it must hold the token only.") from None
    except OSError as error:
        raise TrainingError(f"--hub_token_file {path}: cannot read it ({error.strerror}).") from None
    if not token:
        raise TrainingError(f"--hub_token_file {path} is empty; it must hold the token (hf_...).")
    return token


class HubPublisher:
    """Creates the repository once and uploads the output folder on request.

    Args:
        repo_id (`str`): the repository, e.g. "user/edm-digits".
        token (`str`, *optional*): a Hub token; `None` uses the usual resolution (HF_TOKEN, cached login). It is only
            passed to huggingface_hub calls, never stored or logged.
        private (`bool`): create the repository as private.
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool = False) -> None:
        self._token = token
        self.repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id

    def upload(self, folder: str, commit_message: str) -> bool:
        """Uploads `folder` (without checkpoints or logs); returns whether it worked. An error is logged as a warning:
        the local files are complete either way and training goes on."""
        try:
            upload_folder(repo_id=self.repo_id, folder_path=folder, commit_message=commit_message,
                          ignore_patterns=UPLOAD_IGNORE_PATTERNS, token=self._token)
        except Exception as error:  # noqa: BLE001 - any network or Hub failure must not end training
            logger.warning("Upload to %s failed (%s: %s); the local files in %s are unaffected and training goes on.",
                           self.repo_id, type(error).__name__, error, folder)
            return False
        return True

    def __repr__(self) -> str:  # never show the token
        return f"HubPublisher(repo_id={self.repo_id!r})"
