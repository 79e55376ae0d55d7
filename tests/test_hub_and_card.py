"""HubPublisher (background uploads of consistent snapshots, at most one in flight, failures reported but never
raised) and the model card (generated section between markers, user edits and metadata kept, the
`diffusers-training` tag, no local paths). The Hub is mocked."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml

from diffusers_edm.commands.train import parse_args
from diffusers_edm.training.evaluation import EvaluationScores
from diffusers_edm.training.hub import STAGING_FOLDER, HubPublisher
from diffusers_edm.training.loss import EDMLoss
from diffusers_edm.training.model_card import (
    GENERATED_BEGIN,
    GENERATED_END,
    merge_model_card,
    split_front_matter,
    write_model_card,
)
from diffusers_edm.training.run_setup import public_config

HUB = "diffusers_edm.training.hub"
TOKEN = "hf_SECRETtoken123"


# --- HubPublisher --------------------------------------------------------------------------------------------------


class FakeHub:
    """Stands in for `upload_folder`: records what each call saw, optionally blocks until released or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.error = error
        self.calls: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, **kwargs) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        self.release.wait(10)
        folder = Path(kwargs["folder_path"])
        files = {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}
        self.calls.append(dict(kwargs, files=files))
        with self.lock:
            self.in_flight -= 1
        if self.error is not None:
            raise self.error


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(f"{HUB}.create_repo", mock.Mock(return_value=mock.Mock(repo_id="me/edm")))
    monkeypatch.setattr(f"{HUB}.upload_folder", fake)
    return fake


def make_output_dir(root: Path) -> Path:
    out = root / "run"
    for name, text in {"unet/weights.txt": "v1", "model_index.json": "{}", "README.md": "card v1",
                       "checkpoint-1/optimizer.txt": "state", "logs/log.jsonl": "{}", "samples/grid.png": "png",
                       "samples.png": "latest grid"}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out


def test_upload_returns_at_once_and_sends_the_snapshot_taken_then(hub, tmp_path) -> None:
    out = make_output_dir(tmp_path)
    publisher = HubPublisher("me/edm", token=TOKEN)
    hub.release.clear()
    started = time.monotonic()
    assert publisher.upload(out, "Step 1")
    assert time.monotonic() - started < 5 and hub.started.wait(5)
    (out / "unet" / "weights.txt").write_text("v2")  # the trainer rewrites the folder while the upload runs
    hub.release.set()
    assert publisher.close()
    (call,) = hub.calls
    assert call["files"] == {"unet/weights.txt": "v1", "model_index.json": "{}", "README.md": "card v1",
                             "samples.png": "latest grid"}
    assert call["repo_id"] == "me/edm" and call["commit_message"] == "Step 1" and call["token"] == TOKEN
    assert Path(call["folder_path"]) != out and {"checkpoint-*", "logs/**"} <= set(call["ignore_patterns"])
    assert not (out / STAGING_FOLDER).exists() and (out / "unet" / "weights.txt").read_text() == "v2"


def test_newer_snapshot_replaces_a_queued_one_and_one_upload_runs_at_a_time(hub, tmp_path) -> None:
    out = make_output_dir(tmp_path)
    publisher = HubPublisher("me/edm")
    hub.release.clear()
    publisher.upload(out, "Step 1")
    assert hub.started.wait(5)
    for step in (2, 3):
        (out / "unet" / "weights.txt").write_text(f"v{step}")
        publisher.upload(out, f"Step {step}")
    hub.release.set()
    assert publisher.wait()
    assert [call["commit_message"] for call in hub.calls] == ["Step 1", "Step 3"]
    assert hub.calls[-1]["files"]["unet/weights.txt"] == "v3" and hub.max_in_flight == 1
    publisher.upload(out, "End of training")
    assert publisher.close() and hub.calls[-1]["commit_message"] == "End of training"
    assert not (out / STAGING_FOLDER).exists()


def test_failed_upload_warns_without_the_token_and_wait_reports_it(hub, tmp_path, caplog) -> None:
    out = make_output_dir(tmp_path)
    hub.error = OSError(f"network down (token {TOKEN})")
    publisher = HubPublisher("me/edm", token=TOKEN)
    with caplog.at_level(logging.WARNING):
        assert publisher.upload(out, "Step 1")
        assert not publisher.wait()
    assert "network down" in caplog.text and TOKEN not in caplog.text and TOKEN not in repr(publisher)
    hub.error = None
    publisher.upload(out, "Step 2")
    assert publisher.close()
    with pytest.raises(RuntimeError, match="after close"):
        publisher.upload(out, "Step 3")


def test_wait_without_uploads_succeeds_and_snapshot_errors_warn(hub, tmp_path, caplog) -> None:
    publisher = HubPublisher("me/edm")
    assert publisher.wait()
    with caplog.at_level(logging.WARNING):
        assert not publisher.upload(tmp_path / "missing" / "file.txt", "Step 1")
    assert "Could not snapshot" in caplog.text and publisher.close() and not hub.calls


def test_upload_merges_the_card_into_the_readme_on_the_hub(hub, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    write_model_card(out, **card_kwargs(tmp_path))
    hub_card = merge_model_card(None, (out / "README.md").read_text()).replace("steps of", "EDITED steps of")
    hub_card = hub_card.replace("---\n", "---\nlanguage: en\n", 1) + "\n## Notes from the Hub\n\nKeep me.\n"
    (tmp_path / "hub-readme.md").write_text(hub_card)
    download = mock.Mock(return_value=str(tmp_path / "hub-readme.md"))
    monkeypatch.setattr(f"{HUB}.hf_hub_download", download)
    publisher = HubPublisher("me/edm", token=TOKEN)
    publisher.upload(out, "Step 1")
    assert publisher.close()
    assert download.call_args.args == ("me/edm", "README.md") and download.call_args.kwargs["token"] == TOKEN
    uploaded = hub.calls[0]["files"]["README.md"]
    metadata, body = split_front_matter(uploaded)
    assert metadata["language"] == "en" and "diffusers-training" in metadata["tags"]
    assert body.endswith("## Notes from the Hub\n\nKeep me.\n") and "EDITED" not in body
    assert (out / "README.md").read_text() == merge_model_card(None, (out / "README.md").read_text())


def test_readme_fetch_failure_uploads_the_local_card(hub, tmp_path) -> None:
    out = tmp_path / "run"
    write_model_card(out, **card_kwargs(tmp_path))
    publisher = HubPublisher("me/edm")  # HF_HUB_OFFLINE=1 (conftest): the README download fails
    publisher.upload(out, "Step 1")
    assert publisher.close()
    assert hub.calls[0]["files"]["README.md"] == (out / "README.md").read_text()


# --- The model card ------------------------------------------------------------------------------------------------


def card_kwargs(tmp_path: Path, **overrides) -> dict:
    """write_model_card arguments with the configuration of a real command line full of local paths."""
    local = tmp_path / "me"
    args = parse_args(["--output_dir", str(local / "run"), "--train_data_dir", str(local / "images"),
                       "--model_config", str(local / "model.json"), "--cache_dir", str(local / "cache"),
                       "--hub_token_file", str(local / "token.txt"), "--eval_ref", str(local / "ref.npz"),
                       "--eval_detector_path", str(local / "inception.pt"), "--eval_every", "10kimg",
                       "--resume_from_checkpoint", str(local / "run" / "checkpoint-3")])
    kwargs = dict(repo_id="me/edm", config=public_config(args), dataset_description=f"image folder {local}/images",
                  hub_dataset=None, resolution=16, channels=1, num_classes=0, steps=10, kimg=1.0, batch_size=8,
                  grid_path="samples.png", loss_description=EDMLoss().description)
    kwargs.update(overrides)
    return kwargs


def scores(tmp_path: Path) -> EvaluationScores:
    return EvaluationScores(metric="fid", detector=str(tmp_path / "me" / "inception.pt"), num_images=100,
                            num_inference_steps=18, reference=str(tmp_path / "me" / "ref.npz"), latest=2.5,
                            latest_step=10, latest_kimg=1.0, best=2.5, best_step=10, best_kimg=1.0)


def test_card_has_the_training_tag_and_its_section_markers(tmp_path) -> None:
    text = write_model_card(tmp_path, **card_kwargs(tmp_path)).read_text()
    metadata, body = split_front_matter(text)
    assert {"diffusers-training", "edm", "diffusers_edm"} <= set(metadata["tags"])
    assert metadata["library_name"] == "diffusers" and metadata["pipeline_tag"] == "unconditional-image-generation"
    assert body.strip().startswith(GENERATED_BEGIN) and body.strip().endswith(GENERATED_END)


def test_card_shows_no_local_paths(tmp_path) -> None:
    local_dataset = tmp_path / "me" / "my-dataset"
    local_dataset.mkdir(parents=True)
    text = write_model_card(tmp_path, **card_kwargs(tmp_path, hub_dataset=str(local_dataset)),
                            evaluation=scores(tmp_path)).read_text()
    assert str(tmp_path) not in text and str(Path.home()) not in text and "/me/" not in text
    assert "hub_token_file" not in text and "token.txt" not in text
    for row in ("| image folder | `images` |", "| model config | `model.json` |"):
        assert row in text
    assert "output_dir" not in text and "resume_from_checkpoint" not in text  # not what a reader of the card needs
    assert "image folder images" in text and "my-dataset" in text and "datasets:" not in text


def test_hub_dataset_is_shown(tmp_path) -> None:
    config = card_kwargs(tmp_path)["config"] | {"dataset_name": "me/digits"}
    text = write_model_card(tmp_path, **card_kwargs(tmp_path, config=config, hub_dataset="me/digits")).read_text()
    assert "| dataset | `me/digits` |" in text
    assert split_front_matter(text)[0]["datasets"] == ["me/digits"]


def test_rewrite_keeps_user_text_and_metadata_outside_the_generated_section(tmp_path) -> None:
    path = write_model_card(tmp_path, **card_kwargs(tmp_path))
    metadata, body = split_front_matter(path.read_text())
    metadata.update(language="en", tags=["my-tag", *metadata["tags"]], license="mit")
    body = "Intro by the user.\n" + body.replace("optimizer steps", "EDITED optimizer steps") + "\n## Mine\nText.\n"
    path.write_text("---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n" + body)

    write_model_card(tmp_path, **card_kwargs(tmp_path, steps=20), evaluation=scores(tmp_path))
    metadata, body = split_front_matter(path.read_text())
    assert metadata["language"] == "en" and metadata["license"] == "apache-2.0"  # generated keys are updated
    assert metadata["tags"][0] == "my-tag" and "diffusers-training" in metadata["tags"]
    assert len(metadata["tags"]) == len(set(metadata["tags"])) and "model-index" in metadata
    assert body.startswith("Intro by the user.\n") and body.endswith("\n## Mine\nText.\n")
    assert "EDITED" not in body and "(20 optimizer steps" in body and body.count(GENERATED_BEGIN) == 1


def test_readme_without_markers_is_kept_below_and_an_old_card_is_replaced(tmp_path) -> None:
    generated = write_model_card(tmp_path, **card_kwargs(tmp_path)).read_text()
    merged = merge_model_card("---\nlanguage: de\n---\n# My model\n\nMy notes.\n", generated)
    metadata, body = split_front_matter(merged)
    assert metadata["language"] == "de" and body.index(GENERATED_END) < body.index("# My model\n\nMy notes.")
    old_card = "---\ntags:\n- edm\n---\n# edm\n\nAn EDM model trained with diffusers-edm on\nthe digits.\n"
    assert split_front_matter(merge_model_card(old_card, generated))[1] == split_front_matter(generated)[1]
    assert merge_model_card("just text", generated).endswith("just text")


def test_invalid_metadata_is_replaced_by_ours(tmp_path) -> None:
    generated = write_model_card(tmp_path, **card_kwargs(tmp_path)).read_text()
    merged = merge_model_card("---\ntags: [unclosed\n---\nUser text.\n", generated)
    metadata, body = split_front_matter(merged)
    assert metadata == split_front_matter(generated)[0] and body.endswith("User text.\n")
