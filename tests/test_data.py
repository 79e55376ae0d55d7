"""Tests of `diffusers_edm.data`, the data layer of `train_edm.py`. Offline: every image is made here."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pickle  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from diffusers_edm.data import dataset as data_module  # noqa: E402
from diffusers_edm.data import DataConfig, EDMImageDataset, build_dataset  # noqa: E402
from diffusers_edm.errors import DatasetError  # noqa: E402
from diffusers_edm.data.cache import DecodedImageFile  # noqa: E402
from diffusers_edm.training.trainer import StreamBatchSampler  # noqa: E402


DIGITS = load_digits()


def _stack(dataset: EDMImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.stack(labels)


def _random_uint8(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=shape, dtype=np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    """Write `array` (HWC or HW uint8) as an image and return it (PNG is lossless, so it is what must be read back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return array


def _expected(array: np.ndarray) -> torch.Tensor:
    """EDM's scaling of a uint8 HWC/HW image: CHW float32 `x / 127.5 - 1`."""
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1


def _bilinear_2x_reference(images: np.ndarray) -> np.ndarray:
    """2x bilinear upsampling with half-pixel centres (align_corners=False) written out by hand, in float64.

    Output pixel 2i samples input coordinate i - 1/4, pixel 2i+1 samples i + 1/4; coordinates below 0 or above n-1 are
    clamped to the edge pixel.
    """

    def along_last_axis(x: np.ndarray) -> np.ndarray:
        previous = np.concatenate([x[..., :1], x[..., :-1]], axis=-1)
        following = np.concatenate([x[..., 1:], x[..., -1:]], axis=-1)
        out = np.empty(x.shape[:-1] + (2 * x.shape[-1],))
        out[..., 0::2] = 0.25 * previous + 0.75 * x
        out[..., 1::2] = 0.75 * x + 0.25 * following
        return out

    rows_done = along_last_axis(images)
    return np.swapaxes(along_last_axis(np.swapaxes(rows_done, -1, -2)), -1, -2)


# ---------------------------------------------------------------------------------------------------------------------
# scikit-learn digits (the offline default)


def test_digits_native_resolution_values_and_labels():
    dataset = build_dataset(DataConfig(resolution=8))
    assert len(dataset) == 1797 and dataset.num_images == 1797
    assert (dataset.num_channels, dataset.resolution, dataset.num_classes) == (1, 8, 10)
    assert dataset.class_names == [str(d) for d in range(10)]
    assert "digits" in dataset.source_description
    images, labels = _stack(dataset)
    assert images.dtype == torch.float32 and images.shape == (1797, 1, 8, 8)
    raw = torch.from_numpy(DIGITS.images).unsqueeze(1)
    assert (raw == 0).any() and (raw == 16).any()
    assert torch.all(images[raw == 0] == -1.0) and torch.all(images[raw == 16] == 1.0)
    torch.testing.assert_close(images, (raw / 8 - 1).float(), rtol=0, atol=0)
    assert labels.dtype == torch.float32 and labels.shape == (1797, 10)
    assert torch.all(labels.sum(dim=1) == 1)
    assert torch.equal(labels.argmax(dim=1), torch.from_numpy(DIGITS.target))


def test_digits_default_resolution_is_16_bilinear_upsampling():
    dataset = build_dataset(DataConfig())
    assert dataset.resolution == 16
    images, _ = _stack(dataset)
    reference = torch.from_numpy(DIGITS.images).float().unsqueeze(1) / 8 - 1
    expected = F.interpolate(reference, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    by_hand = _bilinear_2x_reference(DIGITS.images / 8 - 1)
    np.testing.assert_allclose(images[:, 0].numpy(), by_hand, rtol=0, atol=1e-6)
    assert images.min() == -1 and images.max() == 1


def test_digits_unconditional_and_other_resolution():
    dataset = build_dataset(DataConfig(resolution=32, conditional=False))
    image, label = dataset[5]
    assert dataset.num_classes == 0 and dataset.class_names is None and label.shape == (0,)
    reference = torch.from_numpy(DIGITS.images[5:6]).float().unsqueeze(1) / 8 - 1
    expected = F.interpolate(reference, size=(32, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    assert build_dataset(DataConfig(label_column=None)).num_classes == 0


# ---------------------------------------------------------------------------------------------------------------------
# x-flip duplication and max_train_samples


def test_xflip_appends_mirrored_copies():
    plain = build_dataset(DataConfig(resolution=8))
    flipped = build_dataset(DataConfig(resolution=8, xflip=True))
    assert len(flipped) == 2 * len(plain) == 2 * 1797 and flipped.num_images == 1797
    for index in (0, 17, 1796):
        image, label = flipped[index]
        mirror, mirror_label = flipped[index + 1797]
        torch.testing.assert_close(image, plain[index][0], rtol=0, atol=0)
        expected_mirror = torch.from_numpy(DIGITS.images[index][:, ::-1].copy()).float()[None] / 8 - 1
        torch.testing.assert_close(mirror, expected_mirror, rtol=0, atol=0)
        assert torch.equal(label, mirror_label)
    torch.testing.assert_close(flipped[-1][0], flipped[2 * 1797 - 1][0], rtol=0, atol=0)
    with pytest.raises(IndexError):
        flipped[2 * 1797]


def test_max_train_samples_is_a_seeded_subset_before_xflip():
    dataset = build_dataset(DataConfig(resolution=8, max_train_samples=100, seed=3, xflip=True))
    assert dataset.num_images == 100 and len(dataset) == 200
    # EDM semantics: shuffle arange(N) with RandomState(seed), keep the first max_size indices, sorted.
    order = np.arange(1797)
    np.random.RandomState(3).shuffle(order)
    kept = np.sort(order[:100])
    images, labels = _stack(dataset)
    expected = torch.from_numpy(DIGITS.images[kept]).float().unsqueeze(1) / 8 - 1
    torch.testing.assert_close(images[:100], expected, rtol=0, atol=0)
    torch.testing.assert_close(images[100:], torch.flip(expected, dims=[3]), rtol=0, atol=0)
    assert torch.equal(labels[:100].argmax(1), torch.from_numpy(DIGITS.target[kept]))
    assert dataset.num_classes == 10

    other_seed = _stack(build_dataset(DataConfig(resolution=8, max_train_samples=100, seed=4)))[0]
    assert not torch.equal(other_seed, images[:100])
    assert build_dataset(DataConfig(resolution=8, max_train_samples=5000)).num_images == 1797


@pytest.mark.parametrize("value", [0, -3])
def test_max_train_samples_below_one_is_an_error(value):
    with pytest.raises(DatasetError, match="max_train_samples must be at least 1"):
        build_dataset(DataConfig(max_train_samples=value))


def test_max_train_samples_subsets_image_folders(tmp_path):
    arrays = [_save(tmp_path / f"{i:02d}.png", _random_uint8(i, (4, 4, 3))) for i in range(10)]
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path), max_train_samples=4, seed=7))
    order = np.arange(10)
    np.random.RandomState(7).shuffle(order)
    for position, index in enumerate(np.sort(order[:4])):
        torch.testing.assert_close(dataset[position][0], _expected(arrays[index]), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Image folders (train_data_dir)


def test_class_subfolders_give_sorted_class_names(tmp_path):
    arrays = {}
    for class_name, count in (("dogs", 2), ("cats", 3)):
        for i in range(count):
            arrays[f"{class_name}/{i}.png"] = _save(
                tmp_path / class_name / f"{i}.png", _random_uint8(len(arrays), (6, 6, 3))
            )
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert len(dataset) == 5 and (dataset.num_channels, dataset.resolution) == (3, 6)
    assert dataset.class_names == ["cats", "dogs"] and dataset.num_classes == 2
    for position, name in enumerate(sorted(arrays)):
        image, label = dataset[position]
        torch.testing.assert_close(image, _expected(arrays[name]), rtol=0, atol=0)
        expected_label = torch.tensor([1.0, 0.0]) if name.startswith("cats") else torch.tensor([0.0, 1.0])
        assert torch.equal(label, expected_label)
    assert build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=False)).num_classes == 0


def test_single_subfolder_is_unlabelled(tmp_path):
    for i in range(2):
        _save(tmp_path / "only" / f"{i}.png", _random_uint8(i, (4, 4)))
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_classes == 0 and dataset.num_channels == 1


def test_metadata_jsonl_integer_labels(tmp_path):
    arrays = [_save(tmp_path / f"img{i}.png", _random_uint8(i, (5, 5))) for i in range(3)]
    rows = [
        {"file_name": "img0.png", "label": 2},
        {"file_name": "img1.png", "label": 0},
        {"file_name": "img2.png", "label": 2},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert (dataset.num_classes, dataset.class_names, dataset.num_channels) == (3, None, 1)  # max + 1, like EDM
    images, labels = _stack(dataset)
    assert labels.argmax(1).tolist() == [2, 0, 2] and torch.all(labels.sum(1) == 1)
    torch.testing.assert_close(images, torch.stack([_expected(a) for a in arrays]), rtol=0, atol=0)


def test_metadata_jsonl_string_labels_and_custom_column(tmp_path):
    for i in range(3):
        _save(tmp_path / f"img{i}.png", _random_uint8(i, (4, 4, 3)))
    rows = [{"file_name": f"img{i}.png", "kind": kind} for i, kind in enumerate(["zebra", "ant", "zebra"])]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path), label_column="kind"))
    assert dataset.class_names == ["ant", "zebra"]
    assert [dataset[i][1].argmax().item() for i in range(3)] == [1, 0, 1]
    # The default column "label" is absent: the folder is used unlabelled.
    assert build_dataset(DataConfig(train_data_dir=str(tmp_path))).num_classes == 0
    with pytest.raises(DatasetError, match=r"no label column 'label'.*'file_name', 'kind'.*--unconditional"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=True))
    with pytest.raises(DatasetError, match=r"no label column 'species'"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path), label_column="species"))


def test_metadata_csv_integer_strings_become_integers(tmp_path):
    for i in range(3):
        _save(tmp_path / "sub" / f"img{i}.png", _random_uint8(i, (4, 4, 3)))
    (tmp_path / "metadata.csv").write_text("file_name,label\nsub/img0.png,1\nsub/img1.png,4\nsub/img2.png,1\n")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_classes == 5
    assert [dataset[i][1].argmax().item() for i in range(3)] == [1, 4, 1]


def test_flat_folder_is_unconditional_and_conditional_needs_labels(tmp_path):
    arrays = [_save(tmp_path / f"{name}.png", _random_uint8(i, (8, 8, 3))) for i, name in enumerate("bca")]
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert len(dataset) == 3 and dataset.num_classes == 0 and dataset.class_names is None
    image, label = dataset[0]
    assert label.shape == (0,) and label.dtype == torch.float32
    torch.testing.assert_close(image, _expected(arrays[2]), rtol=0, atol=0)  # sorted: a.png first
    with pytest.raises(DatasetError) as error:
        build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=True))
    assert "a.png" in str(error.value) and "--unconditional" in str(error.value)
    assert "metadata.jsonl" in str(error.value)


def test_conditional_names_the_unlabelled_file(tmp_path, caplog):
    _save(tmp_path / "cats" / "c.png", _random_uint8(0, (4, 4, 3)))
    _save(tmp_path / "dogs" / "d.png", _random_uint8(1, (4, 4, 3)))
    _save(tmp_path / "stray.png", _random_uint8(2, (4, 4, 3)))
    with pytest.raises(DatasetError, match=r"stray\.png has none.*--unconditional"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=True))
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_classes == 0 and len(dataset) == 3
    assert "stray.png" in caplog.text and "unconditionally" in caplog.text


def test_metadata_missing_rows_are_missing_labels(tmp_path):
    for i in range(2):
        _save(tmp_path / f"img{i}.png", _random_uint8(i, (4, 4)))
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "img0.png", "label": 1}))
    with pytest.raises(DatasetError, match=r"img1\.png has none"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=True))


# ---------------------------------------------------------------------------------------------------------------------
# EDM dataset format (zip or folder with dataset.json)


def _edm_name(index: int) -> str:
    return f"{index // 1000:05d}/img{index:08d}.png"


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def test_edm_zip_with_dataset_json(tmp_path):
    arrays = [_random_uint8(10 + i, (8, 8, 3)) for i in range(4)]
    labels = [6, 0, 3, 6]
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in (2, 0, 3, 1):  # written out of order: the loader sorts names
            archive.writestr(_edm_name(i), _png_bytes(arrays[i]))
        archive.writestr("dataset.json", json.dumps({"labels": [[_edm_name(i), labels[i]] for i in range(4)]}))
    dataset = build_dataset(DataConfig(train_data_dir=str(path)))
    assert len(dataset) == 4 and dataset.num_classes == 7 and dataset.class_names is None  # max + 1
    assert "data.zip" in dataset.source_description
    for i in range(4):
        image, label = dataset[i]
        torch.testing.assert_close(image, _expected(arrays[i]), rtol=0, atol=0)
        assert torch.equal(label, F.one_hot(torch.tensor(labels[i]), 7).float())


def test_edm_zip_without_dataset_json_is_unlabelled(tmp_path):
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(2):
            archive.writestr(_edm_name(i), _png_bytes(_random_uint8(i, (4, 4))))
    dataset = build_dataset(DataConfig(train_data_dir=str(path)))
    assert (len(dataset), dataset.num_classes, dataset.num_channels) == (2, 0, 1)
    with pytest.raises(DatasetError, match=r"00000/img00000000\.png.*--unconditional"):
        build_dataset(DataConfig(train_data_dir=str(path), conditional=True))


def test_edm_folder_with_null_labels(tmp_path):
    arrays = [_save(tmp_path / _edm_name(i), _random_uint8(i, (4, 4, 3))) for i in range(3)]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": None}))
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path), xflip=True))
    assert len(dataset) == 6 and dataset.num_classes == 0 and dataset[0][1].shape == (0,)
    torch.testing.assert_close(dataset[4][0], torch.flip(_expected(arrays[1]), dims=[2]), rtol=0, atol=0)
    with pytest.raises(DatasetError, match=r"img00000000\.png.*--unconditional"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path), conditional=True))


def test_edm_folder_labels_are_not_taken_from_group_folders(tmp_path):
    for i in (0, 1000):  # two group folders 00000/ and 00001/
        _save(tmp_path / _edm_name(i), _random_uint8(i, (4, 4)))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [[_edm_name(0), 1], [_edm_name(1000), 0]]}))
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_classes == 2 and [dataset[i][1].argmax().item() for i in range(2)] == [1, 0]


def test_edm_dataset_json_referencing_missing_file(tmp_path):
    _save(tmp_path / _edm_name(0), _random_uint8(0, (4, 4)))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [[_edm_name(0), 1], ["00000/img00000007.png", 2]]}))
    with pytest.raises(DatasetError, match=r"img00000007\.png.*Restore the file or remove the entry"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def test_edm_dataset_json_malformed(tmp_path):
    _save(tmp_path / _edm_name(0), _random_uint8(0, (4, 4)))
    (tmp_path / "dataset.json").write_text('{"labels": 3}')
    with pytest.raises(DatasetError, match=r"Could not parse .*dataset\.json"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face datasets, from local directories only


def test_hf_imagefolder_directory(tmp_path):
    root = tmp_path / "hf_images"
    arrays = {}
    for class_name in ("b_class", "a_class"):
        for i in range(2):
            arrays[f"{class_name}/{i}.png"] = _save(
                root / class_name / f"{i}.png", _random_uint8(len(arrays), (6, 6, 3))
            )
    dataset = build_dataset(DataConfig(dataset_name=str(root), cache_dir=str(tmp_path / "cache")))
    assert len(dataset) == 4 and dataset.class_names == ["a_class", "b_class"]
    assert dataset.source_description == str(root)
    images, labels = _stack(dataset)
    expected = {name: _expected(array) for name, array in arrays.items()}
    for image, label in zip(images, labels, strict=True):
        matches = [name for name, reference in expected.items() if torch.equal(image, reference)]
        assert len(matches) == 1
        assert dataset.class_names[label.argmax().item()] == matches[0].split("/")[0]


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("hf_parquet")
    arrays = [_random_uint8(50 + i, (4, 4)) for i in range(4)]
    table = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in arrays], "digit": [0, 3, 1, 3], "caption": ["w", "x", "y", "z"]},
        features=datasets.Features(
            {"img": datasets.Image(), "digit": datasets.Value("int64"), "caption": datasets.Value("string")}
        ),
    )
    table.to_parquet(str(root / "train.parquet"))
    return root, arrays


def test_hf_parquet_with_custom_columns(parquet_dataset, tmp_path):
    root, arrays = parquet_dataset
    config = DataConfig(dataset_name=str(root), image_column="img", label_column="digit", cache_dir=str(tmp_path))
    dataset = build_dataset(config)
    assert (len(dataset), dataset.num_channels, dataset.resolution, dataset.num_classes) == (4, 1, 4, 4)
    images, labels = _stack(dataset)
    torch.testing.assert_close(images, torch.stack([_expected(a) for a in arrays]), rtol=0, atol=0)
    assert labels.argmax(1).tolist() == [0, 3, 1, 3]


def test_hf_missing_columns_list_the_available_ones(parquet_dataset, tmp_path):
    root, _ = parquet_dataset
    with pytest.raises(DatasetError, match=r"no label column 'klass'.*\['img', 'digit', 'caption'\]"):
        build_dataset(
            DataConfig(dataset_name=str(root), image_column="img", label_column="klass", cache_dir=str(tmp_path))
        )
    with pytest.raises(DatasetError, match=r"no image column 'image'.*\['img', 'digit', 'caption'\]"):
        build_dataset(DataConfig(dataset_name=str(root), label_column="digit", cache_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match=r"no label column 'label'.*--unconditional"):
        build_dataset(
            DataConfig(dataset_name=str(root), image_column="img", conditional=True, cache_dir=str(tmp_path))
        )
    unlabelled = build_dataset(DataConfig(dataset_name=str(root), image_column="img", cache_dir=str(tmp_path)))
    assert unlabelled.num_classes == 0
    with pytest.raises(DatasetError, match=r"Column 'digit' .* does not hold images"):
        build_dataset(DataConfig(dataset_name=str(root), image_column="digit", cache_dir=str(tmp_path)))
    # A string column holds image paths; here they do not exist.
    with pytest.raises(DatasetError, match=r"Could not read image row 0 of .*\(w\).*FileNotFoundError"):
        build_dataset(DataConfig(dataset_name=str(root), image_column="caption", cache_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------------------------------
# Center crop, resize, channel modes


def test_center_crop_and_lanczos_resize(tmp_path):
    wide = _random_uint8(0, (12, 20, 3))  # 20 wide, 12 high
    tall = _random_uint8(1, (21, 12, 3))  # 12 wide, 21 high
    _save(tmp_path / "a_wide.png", wide)
    _save(tmp_path / "b_tall.png", tall)
    cropped = build_dataset(DataConfig(train_data_dir=str(tmp_path), center_crop=True))
    assert cropped.resolution == 12
    torch.testing.assert_close(cropped[0][0], _expected(wide[:, 4:16]), rtol=0, atol=0)
    torch.testing.assert_close(cropped[1][0], _expected(tall[4:16, :]), rtol=0, atol=0)  # top offset (21-12)//2

    resized = build_dataset(DataConfig(train_data_dir=str(tmp_path), center_crop=True, resolution=8))
    assert resized.resolution == 8
    for position, array in enumerate((wide[:, 4:16], tall[4:16, :])):
        reference = np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize((8, 8), Image.Resampling.LANCZOS))
        torch.testing.assert_close(resized[position][0], _expected(reference), rtol=0, atol=0)


def test_resolution_resizes_mixed_sizes_and_stretches_non_square(tmp_path, caplog):
    small = _save(tmp_path / "a.png", _random_uint8(0, (4, 4, 3)))
    _save(tmp_path / "b.png", _random_uint8(1, (10, 6, 3)))
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path), resolution=4))
    assert dataset.resolution == 4 and len(dataset) == 2
    torch.testing.assert_close(dataset[0][0], _expected(small), rtol=0, atol=0)  # already 4x4: untouched
    assert "b.png is 6x10 and is stretched" in caplog.text


def test_non_square_without_crop_or_resolution_is_an_error(tmp_path):
    _save(tmp_path / "rect.png", _random_uint8(0, (6, 8, 3)))
    with pytest.raises(DatasetError, match=r"rect\.png is 8x6 .*--center_crop"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def test_mixed_sizes_without_resolution_is_an_error(tmp_path):
    _save(tmp_path / "a.png", _random_uint8(0, (8, 8, 3)))
    _save(tmp_path / "b.png", _random_uint8(1, (8, 8, 3)))
    _save(tmp_path / "c.png", _random_uint8(2, (16, 16, 3)))
    with pytest.raises(DatasetError, match=r"c\.png is 16x16 but .*a\.png is 8x8.*pass --resolution to resize"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def test_mixed_grayscale_and_colour_become_rgb_whatever_the_order_and_are_reported_once(tmp_path, caplog):
    # Deliberate change: the first file in sort order used to decide the channels (here: grayscale).
    gray = _save(tmp_path / "a.png", _random_uint8(0, (4, 4)))
    rgb = _save(tmp_path / "b.png", _random_uint8(1, (4, 4, 3)))
    rgba = _save(tmp_path / "c.png", _random_uint8(2, (4, 4, 4)), mode="RGBA")
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_channels == 3
    torch.testing.assert_close(dataset[0][0], _expected(np.repeat(gray[:, :, None], 3, axis=2)), rtol=0, atol=0)
    torch.testing.assert_close(dataset[1][0], _expected(rgb), rtol=0, atol=0)
    torch.testing.assert_close(dataset[2][0], _expected(rgba[:, :, :3]), rtol=0, atol=0)
    assert caplog.text.count("mix grayscale and colour") == 1
    assert "1 are grayscale (e.g. " in caplog.text and "a.png, mode L" in caplog.text
    assert "2 colour (e.g. " in caplog.text and "b.png, mode RGB" in caplog.text


def test_rgba_palette_and_16_bit_images(tmp_path):
    rgba = _random_uint8(0, (4, 4, 4))
    _save(tmp_path / "rgba" / "a.png", rgba, mode="RGBA")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path / "rgba")))
    assert dataset.num_channels == 3
    torch.testing.assert_close(dataset[0][0], _expected(rgba[:, :, :3]), rtol=0, atol=0)  # alpha dropped

    palette = Image.fromarray(_random_uint8(1, (4, 4, 3))).convert("P")
    (tmp_path / "palette").mkdir()
    palette.save(tmp_path / "palette" / "p.png")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path / "palette")))
    assert dataset.num_channels == 3
    torch.testing.assert_close(dataset[0][0], _expected(np.asarray(palette.convert("RGB"))), rtol=0, atol=0)

    deep = np.array([[0, 200], [65535, 257 * 100 + 200]], dtype=np.uint16)
    (tmp_path / "deep").mkdir()
    Image.fromarray(deep).save(tmp_path / "deep" / "d.png")
    dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path / "deep")))
    assert dataset.num_channels == 1
    expected_8_bit = np.array([[0, 1], [255, 101]], dtype=np.uint8)  # round(x / 257): 65535 -> 255
    torch.testing.assert_close(dataset[0][0], _expected(expected_8_bit), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Bad data and configuration


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=rf"{tmp_path.name} contains no images"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


@pytest.mark.parametrize("content", [b"this is not a png", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, content):
    _save(tmp_path / "good.png", _random_uint8(0, (8, 8, 3)))
    if content == "truncated":
        content = _png_bytes(_random_uint8(1, (8, 8, 3)))[:60]
    (tmp_path / "broken.png").write_bytes(content)
    with pytest.raises(DatasetError, match=r"Could not read image .*broken\.png.*Remove the file"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def test_corrupt_member_of_zip_names_the_member(tmp_path):
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(_edm_name(0), _png_bytes(_random_uint8(0, (4, 4))))
        archive.writestr(_edm_name(1), b"garbage")
    with pytest.raises(DatasetError, match=r"00000/img00000001\.png \(in .*data\.zip\)"):
        build_dataset(DataConfig(train_data_dir=str(path)))


def test_metadata_referencing_missing_file(tmp_path):
    _save(tmp_path / "present.png", _random_uint8(0, (4, 4)))
    rows = [{"file_name": "present.png", "label": 0}, {"file_name": "gone.png", "label": 1}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DatasetError, match=r"gone\.png.*Restore the file or remove its row"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def test_invalid_labels(tmp_path):
    for i in range(2):
        _save(tmp_path / f"img{i}.png", _random_uint8(i, (4, 4)))
    rows = [{"file_name": "img0.png", "label": 0.5}, {"file_name": "img1.png", "label": 1}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(DatasetError, match=r"img0\.png has label 0\.5"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    "config, message",
    [
        (DataConfig(dataset_name="x", train_data_dir="y"), "not both"),
        (DataConfig(resolution=0), "--resolution must be a positive integer"),
        (DataConfig(conditional=True, label_column=None), "label_column is None"),
        (DataConfig(train_data_dir="/nonexistent/edm-data"), "does not exist"),
        (DataConfig(dataset_config_name="cfg"), "needs --dataset_name"),
        (DataConfig(num_workers=-1), "must be 0 or more"),
    ],
)
def test_bad_configuration(config, message):
    with pytest.raises(DatasetError, match=message):
        build_dataset(config)
    assert issubclass(DatasetError, ValueError)


def test_non_zip_file_and_bad_zip(tmp_path):
    (tmp_path / "images.tar").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a .zip archive"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path / "images.tar")))
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a valid zip archive"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path / "bad.zip")))


# ---------------------------------------------------------------------------------------------------------------------
# Decoded-image cache files (datasets larger than memory)


def _mixed_folder(root: Path, count: int = 24) -> Path:
    """Two class folders of images of assorted sizes and modes (grayscale first in file order, then colour)."""
    for i in range(count):
        height, width = 10 + i % 5, 12 + i % 3
        mode = "L" if i < count // 3 else None
        array = _random_uint8(i, (height, width) if mode else (height, width, 3))
        _save(root / ("cats" if i % 2 else "dogs") / f"{i:03d}.png", array, mode)
    return root


def _batches(dataset: EDMImageDataset, num_workers: int, count: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` batches of the trainer's sampling of `dataset` (batch size 4, seed 7)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StreamBatchSampler(len(dataset), 4, rank=0, world_size=1, seed=7),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(7),
    )
    batches = iter(loader)
    return [next(batches) for _ in range(count)]


def _cache_files(folder: Path) -> list[str]:
    return sorted(path.suffix for path in folder.iterdir()) if folder.exists() else []


def _edm_zip(path: Path, count: int = 12) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            archive.writestr(_edm_name(i), _png_bytes(_random_uint8(i, (8, 8, 3))))
        archive.writestr("dataset.json", json.dumps({"labels": [[_edm_name(i), i % 3] for i in range(count)]}))
    return path


@pytest.mark.parametrize("source", ["folder", "zip", "datasets"])
def test_cached_dataset_gives_the_same_items_and_batches_as_in_memory(source, tmp_path, parquet_dataset):
    if source == "folder":
        config = DataConfig(train_data_dir=str(_mixed_folder(tmp_path / "images")), resolution=8, center_crop=True)
    elif source == "zip":
        config = DataConfig(train_data_dir=str(_edm_zip(tmp_path / "data.zip")), max_train_samples=9, seed=3)
    else:
        root, _ = parquet_dataset
        config = DataConfig(dataset_name=str(root), image_column="img", label_column="digit", cache_dir=str(tmp_path))
    config.xflip = True
    eager = build_dataset(dataclasses.replace(config, in_memory=True))
    cache_dir = tmp_path / "decoded"
    lazy = build_dataset(dataclasses.replace(config, in_memory=False, decoded_cache_dir=str(cache_dir), num_workers=2))
    assert isinstance(lazy._images, DecodedImageFile) and _cache_files(cache_dir) == [".json", ".npy"]
    for name in ("num_channels", "resolution", "num_images", "num_classes", "class_names", "source_description"):
        assert getattr(lazy, name) == getattr(eager, name), name
    (eager_images, eager_labels), (lazy_images, lazy_labels) = _stack(eager), _stack(lazy)
    assert torch.equal(eager_images, lazy_images) and torch.equal(eager_labels, lazy_labels)
    expected = _batches(eager, num_workers=0)
    for batches in (_batches(lazy, num_workers=0), _batches(lazy, num_workers=2)):
        for (images, labels), (expected_images, expected_labels) in zip(batches, expected, strict=True):
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_mixed_modes_are_widened_to_rgb_in_the_cache_and_warned_again_on_reuse(tmp_path, caplog):
    folder = _mixed_folder(tmp_path / "images")
    cache_dir = str(tmp_path / "decoded")
    config = DataConfig(train_data_dir=str(folder), resolution=8, in_memory=False, decoded_cache_dir=cache_dir)
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        built = build_dataset(config)
        assert caplog.text.count("mix grayscale and colour") == 1 and caplog.text.count("is stretched to 8x8") == 1
        caplog.clear()
        reused = build_dataset(config)
        assert caplog.text.count("mix grayscale and colour") == 1 and caplog.text.count("is stretched to 8x8") == 1
    assert built.num_channels == reused.num_channels == 3
    assert torch.equal(_stack(built)[0], _stack(reused)[0])
    gray = np.asarray(Image.open(folder / "cats" / "001.png").resize((8, 8), Image.Resampling.LANCZOS))
    assert torch.equal(built[0][0], _expected(np.repeat(gray[:, :, None], 3, axis=2)))


def test_cache_is_reused_without_decoding_and_rebuilt_when_the_data_change(tmp_path):
    folder = tmp_path / "images"
    arrays = [_save(folder / f"{i}.png", _random_uint8(i, (6, 6, 3))) for i in range(5)]
    cache_dir = tmp_path / "decoded"
    config = DataConfig(train_data_dir=str(folder), in_memory=False, decoded_cache_dir=str(cache_dir))
    build_dataset(config)
    with mock.patch.object(data_module, "decode_images", side_effect=AssertionError("decoded again")):
        reused = build_dataset(config)
    assert torch.equal(reused[4][0], _expected(arrays[4]))
    # Another preparation of the same folder is another cache, kept alongside.
    build_dataset(dataclasses.replace(config, resolution=4))
    assert _cache_files(cache_dir) == [".json", ".json", ".npy", ".npy"]
    # Changed content replaces the cache of that preparation.
    replacement = _save(folder / "4.png", _random_uint8(99, (6, 6, 3)))
    os.utime(folder / "4.png", ns=(1, 1))
    rebuilt = build_dataset(config)
    assert torch.equal(rebuilt[4][0], _expected(replacement))
    assert torch.equal(reused[4][0], _expected(arrays[4]))  # a dataset still open keeps reading its own file
    assert _cache_files(cache_dir) == [".json", ".json", ".npy", ".npy"]
    _save(folder / "5.png", _random_uint8(5, (6, 6, 3)))
    assert len(build_dataset(config)) == 6


def test_half_written_or_damaged_cache_is_never_used(tmp_path, caplog):
    folder = tmp_path / "images"
    arrays = [_save(folder / f"{i}.png", _random_uint8(i, (6, 6))) for i in range(4)]
    cache_dir = tmp_path / "decoded"
    config = DataConfig(train_data_dir=str(folder), in_memory=False, decoded_cache_dir=str(cache_dir))
    build_dataset(config)
    images_path = next(cache_dir.glob("*.npy"))
    meta_path = images_path.with_suffix(".json")
    # A crash after the images were moved into place, before the metadata that marks them complete.
    meta_path.unlink()
    images_path.write_bytes(images_path.read_bytes()[:-10])
    assert torch.equal(build_dataset(config)[3][0], _expected(arrays[3]))
    # A truncated image file with its metadata.
    images_path.write_bytes(images_path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        assert torch.equal(build_dataset(config)[3][0], _expected(arrays[3]))
    assert "Ignoring the cache" in caplog.text
    # A bad image fails the build before anything is written, and leaves no staging file behind.
    (folder / "9.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"^Could not read image .*9\.png .*Remove the file[^\n]*$"):
        build_dataset(dataclasses.replace(config, num_workers=2))
    assert _cache_files(cache_dir) == [".json", ".npy"]


def test_cached_dataset_pickles_without_its_pixels(tmp_path):
    folder = tmp_path / "images"
    for i in range(64):
        _save(folder / f"{i}.png", _random_uint8(i, (32, 32, 3)))
    config = DataConfig(train_data_dir=str(folder), in_memory=False, decoded_cache_dir=str(tmp_path / "decoded"))
    dataset = build_dataset(config)
    payload = pickle.dumps(dataset)
    assert len(payload) < 64 * 32 * 32 * 3 // 10  # what a spawned DataLoader worker receives
    copy = pickle.loads(payload)
    assert torch.equal(_stack(copy)[0], _stack(dataset)[0])


def test_small_data_stay_in_memory_unless_larger_than_the_limit(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    for i in range(4):
        _save(folder / f"{i}.png", _random_uint8(i, (8, 8, 3)))
    cache_dir = tmp_path / "decoded"
    config = DataConfig(train_data_dir=str(folder), decoded_cache_dir=str(cache_dir))
    assert isinstance(build_dataset(config)._images, torch.Tensor) and not cache_dir.exists()
    monkeypatch.setattr(data_module, "IN_MEMORY_MAX_BYTES", 4 * 8 * 8 * 3 - 1)
    assert isinstance(build_dataset(config)._images, DecodedImageFile)
    assert _cache_files(cache_dir) == [".json", ".npy"]


def test_unwritable_cache_folder_is_one_line_error(tmp_path):
    _save(tmp_path / "images" / "0.png", _random_uint8(0, (4, 4)))
    (tmp_path / "file").write_text("not a folder")
    config = DataConfig(
        train_data_dir=str(tmp_path / "images"), in_memory=False, decoded_cache_dir=str(tmp_path / "file" / "x")
    )
    with pytest.raises(DatasetError, match=r"^Could not write the decoded images .*--decoded_cache_dir[^\n]*$"):
        build_dataset(config)
