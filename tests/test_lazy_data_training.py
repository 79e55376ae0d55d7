"""Training from a decoded-image cache file, read by DataLoader workers, is bit-identical to training from memory, and
resumes exactly."""

import dataclasses
from unittest import mock

import numpy as np
import torch
from PIL import Image

from diffusers_edm.commands.train import parse_args, train
from diffusers_edm.training import trainer

from .test_training import TINY, final_weights


def _image_folder(root):
    for i in range(24):
        array = np.random.RandomState(i).randint(0, 256, size=(16, 16, 3), dtype=np.uint8)
        path = root / ("cats" if i % 2 else "dogs") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return root


def _train(out, folder, steps, *extra, **data_options):
    """`train_edm.py` on `folder` for `steps` steps; `data_options` replace fields of the trainer's `DataConfig`."""
    args = parse_args(["--output_dir", str(out), "--train_data_dir", str(folder), "--seed", "3", "--augment_p", "0.5",
                       "--dropout", "0.2", "--lr_rampup_kimg", "0.05", "--ema_halflife_kimg", "0.02",
                       "--sample_every", "0", "--checkpointing_steps", "0", "--max_train_steps", str(steps), *TINY,
                       *extra])
    build_dataset = trainer.build_dataset

    def build_with_options(config):
        return build_dataset(dataclasses.replace(config, **data_options))

    with mock.patch.object(trainer, "build_dataset", build_with_options):
        train(args)


def test_cached_data_in_workers_trains_and_resumes_like_data_in_memory(tmp_path):
    folder = _image_folder(tmp_path / "images")
    _train(tmp_path / "memory", folder, 4, in_memory=True)
    lazy = dict(in_memory=False, decoded_cache_dir=str(tmp_path / "decoded"), num_workers=2)
    workers = ["--dataloader_num_workers", "2"]
    _train(tmp_path / "cached", folder, 2, *workers, **lazy)
    _train(tmp_path / "cached", folder, 4, *workers, "--resume_from_checkpoint", "latest", **lazy)
    assert len(list((tmp_path / "decoded").glob("*.npy"))) == 1
    for expected, resumed in zip(final_weights(tmp_path / "memory"), final_weights(tmp_path / "cached"), strict=True):
        assert expected.keys() == resumed.keys()
        for key, value in expected.items():
            assert torch.equal(resumed[key], value), key
