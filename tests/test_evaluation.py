"""The evaluation package: feature statistics and the Fréchet distance against closed forms and numpy, reference
files in fid.py's format, the seeded subset, grayscale repetition, the detectors (TorchScript, DINOv2 through a tiny
randomly initialised `Dinov2Model`, the Inception download) and their errors."""

import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch
from transformers import Dinov2Config, Dinov2Model

from diffusers_edm.evaluation import (
    DetectorError,
    EvaluationError,
    FeatureStatistics,
    ImageFiles,
    ImageSourceError,
    ReferenceStatisticsError,
    compute_statistics,
    detectors,
    downloads,
    frechet_distance,
    load_detector,
    load_reference,
    save_reference,
)
from diffusers_edm.evaluation.features import process_batches

from .evaluation_helpers import mean_and_covariance, random_images, tiny_features, write_detector, write_images


def random_rotation(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


# The Fréchet distance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_of_gaussians_with_commuting_covariances_has_its_closed_form(method):
    # Σ1 = Q diag(a) Qᵀ, Σ2 = Q diag(b) Qᵀ commute, so Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ (√a − √b)².
    dim = 64
    rng = np.random.default_rng(1)
    q = random_rotation(dim, 2)
    a, b = rng.uniform(0.1, 3, dim), rng.uniform(0.1, 3, dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    value = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T, method=method)
    assert value == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T, method=method) == pytest.approx(
        0, abs=1e-9)


def test_fast_method_agrees_with_scipy_sqrtm_on_feature_like_statistics():
    # Non-commuting covariances of correlated, partly degenerate features (more dimensions than some samples span).
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(256, 256)) / 16
    real = np.maximum(rng.normal(size=(2000, 256)) @ mixing, 0)
    fake = np.maximum(rng.normal(0.05, 1.1, size=(1500, 256)) @ mixing, 0)
    (mu1, sigma1), (mu2, sigma2) = mean_and_covariance(real), mean_and_covariance(fake)
    exact = frechet_distance(mu1, sigma1, mu2, sigma2, method="sqrtm")
    assert frechet_distance(mu1, sigma1, mu2, sigma2, method="eigh") == pytest.approx(exact, rel=1e-6)
    # "sqrtm" is the official computation itself.
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    assert exact == np.real(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root))


def test_frechet_distance_rejects_mismatched_widths():
    with pytest.raises(EvaluationError, match="same detector"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# Feature statistics ----------------------------------------------------------------------------------------------


def test_statistics_equal_numpy_mean_and_unbiased_covariance():
    features = np.random.default_rng(0).normal(2.0, 3.0, size=(301, 40)).astype(np.float32)
    statistics = FeatureStatistics(40)
    for start in range(0, 301, 64):
        statistics.update(torch.from_numpy(features[start:start + 64]))
    mu, sigma = statistics.mean_and_covariance()
    expected_mu, expected_sigma = mean_and_covariance(features.astype(np.float64))
    assert statistics.count == 301 and mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-10, atol=1e-10)


def test_statistics_do_not_depend_on_the_order_of_the_batches():
    # What lets W processes give the same numbers as one: the sums over batches are correctly rounded.
    batches = [torch.from_numpy(np.random.default_rng(i).normal(i, 10.0 ** (i % 4), size=(16, 8)).astype(np.float32))
               for i in range(12)]
    results = []
    for order in (range(12), reversed(range(12)), [3, 7, 0, 11, 1, 5, 9, 2, 8, 4, 10, 6]):
        statistics = FeatureStatistics(8)
        for index in order:
            statistics.update(batches[index])
        results.append(statistics.mean_and_covariance())
    for mu, sigma in results[1:]:
        assert np.array_equal(mu, results[0][0]) and np.array_equal(sigma, results[0][1])


def test_process_batches_cut_the_same_batches_for_any_number_of_processes():
    single = process_batches(10, 3)
    assert [list(b) for b in single] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    two = process_batches(10, 3, rank=0, world_size=2) + process_batches(10, 3, rank=1, world_size=2)
    assert sorted(map(tuple, two)) == sorted(map(tuple, single))


def test_too_few_images_for_a_covariance_is_an_error():
    statistics = FeatureStatistics(4)
    statistics.update(torch.zeros(1, 4))
    with pytest.raises(EvaluationError, match="at least 2 images"):
        statistics.mean_and_covariance()


# Reference files -------------------------------------------------------------------------------------------------


def test_reference_round_trip_in_the_official_npz_format(tmp_path):
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=5), np.cov(rng.normal(size=(20, 5)), rowvar=False)
    path = save_reference(tmp_path / "ref.npz", mu, sigma)
    with np.load(path) as data:  # how fid.py reads a reference
        assert sorted(data.files) == ["mu", "sigma"] and data["mu"].dtype == np.float64
        assert np.array_equal(data["mu"], mu) and np.array_equal(data["sigma"], sigma)
    loaded = load_reference(path)
    assert np.array_equal(loaded[0], mu) and np.array_equal(loaded[1], sigma)
    np.savez(tmp_path / "official", mu=mu.astype(np.float32), sigma=sigma)  # fid.py's np.savez(dest, mu=, sigma=)
    assert np.array_equal(load_reference(tmp_path / "official.npz")[0], mu.astype(np.float32).astype(np.float64))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content, message", [
    (dict(mu=np.zeros(3)), "no 'sigma'"),
    (dict(mu=np.zeros(3), sigma=np.eye(4)), "expected \\(D,\\)"),
    (dict(mu=np.full(3, np.nan), sigma=np.eye(3)), "non-finite"),
    (dict(mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1)), "Could not read"),
])
def test_malformed_references_are_rejected(content, message, tmp_path):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(ReferenceStatisticsError, match=message):
        load_reference(tmp_path / "bad.npz")


def test_missing_or_non_npz_reference_is_rejected(tmp_path):
    with pytest.raises(ReferenceStatisticsError, match="not found"):
        load_reference(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ReferenceStatisticsError, match="Could not read"):
        load_reference(tmp_path / "text.npz")


# Image files and the seeded subset --------------------------------------------------------------------------------


def test_seeded_subset_is_fid_py_selection(tmp_path):
    write_images(tmp_path / "imgs", random_images(30), [f"{i // 10:06d}/{i:06d}.png" for i in range(30)])
    files = ImageFiles(tmp_path / "imgs")
    assert len(files) == 30 and files.names[11] == "000001/000011.png"
    assert files.subset(30) == files.names
    order = np.arange(30)
    np.random.RandomState(5).shuffle(order)  # the dataset class's max_size + random_seed selection
    assert files.subset(12, seed=5) == [files.names[i] for i in sorted(order[:12])]
    with pytest.raises(ImageSourceError, match="fewer than --num 31"):
        files.subset(31)


def test_zip_and_folder_give_the_same_pixels(tmp_path):
    images = random_images(5)
    folder = write_images(tmp_path / "imgs", images)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(os.listdir(folder)):
            archive.write(folder / name, name)
    from_zip, from_folder = ImageFiles(tmp_path / "imgs.zip"), ImageFiles(folder)
    assert from_zip.names == from_folder.names
    assert torch.equal(from_zip.read_batch(from_zip.names), torch.from_numpy(images))
    assert torch.equal(from_folder.read_batch(from_folder.names), torch.from_numpy(images))


def test_unreadable_and_mismatched_images_name_the_file(tmp_path):
    folder = write_images(tmp_path / "imgs", random_images(2))
    (folder / "000002.png").write_bytes(b"\x89PNG broken")
    files = ImageFiles(folder)
    with pytest.raises(ImageSourceError, match="000002.png"):
        files.read_batch(files.names)
    write_images(folder, random_images(1, size=16), ["000003.png"])
    with pytest.raises(ImageSourceError, match="000003.png.*same size"):
        files.read_batch(["000000.png", "000003.png"])


# Detectors -------------------------------------------------------------------------------------------------------


def test_torchscript_detector_gives_the_modules_features(tmp_path):
    detector = load_detector(str(write_detector(tmp_path / "det.pt", seed=4)))
    images = random_images(6)
    assert detector.metric == "fd"
    np.testing.assert_array_equal(detector(torch.from_numpy(images)).double().numpy(), tiny_features(images, seed=4))


def test_grayscale_images_are_repeated_to_three_channels(tmp_path):
    detector = load_detector(str(write_detector(tmp_path / "det.pt")))
    gray = random_images(9, channels=1)
    statistics = compute_statistics(lambda idx: torch.from_numpy(gray[list(idx)]), 9, detector, batch_size=4)
    expected = mean_and_covariance(tiny_features(np.repeat(gray, 3, axis=1)))  # float32 network: batch-size noise
    np.testing.assert_allclose(statistics.mean_and_covariance()[0], expected[0], rtol=1e-5)
    np.testing.assert_allclose(statistics.mean_and_covariance()[1], expected[1], rtol=1e-4, atol=1e-8)


def test_unknown_or_broken_detectors_are_clear_errors(tmp_path):
    with pytest.raises(DetectorError, match="Unknown detector 'incepton'"):
        load_detector("incepton")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(DetectorError, match="torch.jit.save"):
        load_detector(str(tmp_path / "plain.pt"))
    wrong = torch.jit.script(torch.nn.Linear(3, 2))
    torch.jit.save(wrong, str(tmp_path / "wrong.pt"))
    detector = load_detector(str(tmp_path / "wrong.pt"))
    with pytest.raises(DetectorError, match="return_features=True"):
        compute_statistics(lambda idx: torch.zeros(len(idx), 3, 8, 8, dtype=torch.uint8), 2, detector)


def pil_bicubic(images, size):
    """Bicubic resize of every channel with PIL in float mode ("F": no rounding), the reference that torch's antialiased
    bicubic resize (EDM2's) is designed to match."""
    return np.stack([np.stack([np.asarray(PIL.Image.fromarray(channel.astype(np.float32), mode="F").resize(
        (size, size), PIL.Image.Resampling.BICUBIC)) for channel in image]) for image in images]).astype(np.float64)


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=56, patch_size=14)
    Dinov2Model(config).eval().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("size", [16, 300])  # up- and (antialiased) downsampling
def test_dinov2_detector_preprocesses_like_edm2_and_returns_the_normed_cls_token(tiny_dinov2, size):
    detector = load_detector("dinov2", tiny_dinov2)
    images = random_images(3, size=size)
    features = detector(torch.from_numpy(images))
    assert detector.metric == "fd_dinov2" and features.shape == (3, 32) and features.dtype == torch.float32
    pixels = pil_bicubic(images, 224) / 255
    pixels = (pixels - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array([0.229, 0.224, 0.225])[:, None, None]
    model = Dinov2Model.from_pretrained(tiny_dinov2).eval()
    with torch.no_grad():
        hidden = model(pixel_values=torch.from_numpy(pixels).float()).last_hidden_state
    expected = torch.nn.functional.layer_norm(hidden[:, 0], (32,), model.layernorm.weight, model.layernorm.bias,
                                              model.config.layer_norm_eps)
    # last_hidden_state is already layer-normed; normalising the CLS row again leaves it (nearly) unchanged.
    torch.testing.assert_close(features, hidden[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(features, expected, rtol=1e-3, atol=1e-3)


def test_dinov2_that_cannot_be_loaded_names_the_flag(tmp_path):
    with pytest.raises(DetectorError, match="--detector_path"):
        load_detector("dinov2", tmp_path / "empty")


def test_inception_is_downloaded_once_and_checked(tmp_path, monkeypatch):
    source = write_detector(tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(downloads.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(downloads, "offline", lambda: False)
    monkeypatch.setattr(detectors, "INCEPTION_URL", source.as_uri())
    detector = load_detector("inception")
    (cached,) = (tmp_path / "hf" / "diffusers_edm" / "detectors").glob("*-inception-2015-12-05.pt")
    assert detector.metric == "fid" and cached.read_bytes() == source.read_bytes()
    source.unlink()  # the second use reads the cache
    assert load_detector("inception").metric == "fid"
    cached.write_bytes(cached.read_bytes()[:-10])  # a damaged cache file is an error, never a wrong score
    with pytest.raises(DetectorError, match="SHA-256"):
        load_detector("inception")


def test_inception_with_a_pinned_checksum_refuses_other_files(tmp_path, monkeypatch):
    source = write_detector(tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(downloads.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(downloads, "offline", lambda: False)
    monkeypatch.setattr(detectors, "INCEPTION_URL", source.as_uri())
    monkeypatch.setattr(detectors, "INCEPTION_SHA256", "0" * 64)
    with pytest.raises(DetectorError, match="expected 0000"):
        load_detector("inception")
    assert not list((tmp_path / "hf").rglob("*.pt*"))  # nothing left behind
    with pytest.raises(DetectorError, match="--detector .*inception-2015-12-05.pt"):
        load_detector("inception", detector_path=source)
    monkeypatch.setattr(detectors, "INCEPTION_SHA256", downloads.sha256_of(source))
    assert load_detector("inception", detector_path=source).name == "inception"


def test_inception_offline_names_the_url_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(downloads, "offline", lambda: True)
    with pytest.raises(DetectorError, match="inception-2015-12-05.pt .*HF_HUB_OFFLINE.*--detector_path"):
        load_detector("inception")
    with pytest.raises(DetectorError, match="does not exist"):
        load_detector("inception", detector_path=tmp_path / "absent.pt")


def test_packaged_digits_network_recognises_the_real_digits_and_their_statistics():
    from diffusers_edm.data import DataConfig, build_dataset

    detector = load_detector("digits")
    dataset = build_dataset(DataConfig())
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))]).argmax(1)
    pixels = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        logits = detector.net(pixels.repeat(1, 3, 1, 1))
    assert detector.metric == "fd_digits" and (logits.argmax(1) == labels).float().mean() > 0.97
    features = detector(pixels.repeat(1, 3, 1, 1)).double().numpy()
    assert features.shape == (1797, 128)
    mu, sigma = mean_and_covariance(features)
    half = mean_and_covariance(features[::2])
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)
    assert 0 < frechet_distance(*half, mu, sigma) < 20  # a random half of the real digits is close to all of them


def test_reference_given_by_url_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    mu, sigma = np.arange(3.0), np.eye(3)
    save_reference(served / "cifar10-32x32.npz", mu, sigma)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(downloads.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(downloads, "offline", lambda: False)
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar10-32x32.npz"
    try:
        loaded = load_reference(url)
        (served / "cifar10-32x32.npz").unlink()  # the second use reads the cache
        again = load_reference(url)
        with pytest.raises(EvaluationError, match="Could not download .*absent.npz.*--ref"):
            load_reference(url.replace("cifar10-32x32", "absent"))
    finally:
        server.shutdown()
    assert np.array_equal(loaded[0], mu) and np.array_equal(again[1], sigma)
    assert len(list((tmp_path / "hf" / "diffusers_edm" / "refs").glob("*-cifar10-32x32.npz"))) == 1


def test_edm2_statistics_pickles_load_by_metric_without_running_code(tmp_path):
    """EDM2's reference files (`dataset-refs/img512.pkl`): a pickled dict {metric: {"mu", "sigma"}} of numpy arrays."""
    import pickle

    generator = np.random.default_rng(0)
    features = {metric: generator.normal(size=(50, width)) for metric, width in (("fid", 6), ("fd_dinov2", 4))}
    stats = {metric: {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)} for metric, f in features.items()}
    path = tmp_path / "img512.pkl"
    path.write_bytes(pickle.dumps(stats))
    for metric in ("fid", "fd_dinov2"):
        mu, sigma = load_reference(path, metric)
        assert np.array_equal(mu, stats[metric]["mu"]) and np.array_equal(sigma, stats[metric]["sigma"])
    with pytest.raises(ReferenceStatisticsError, match="no 'fd_digits' statistics .*'fd_dinov2', 'fid'"):
        load_reference(path, "fd_digits")

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(pickle.dumps({"fid": {"mu": Payload(), "sigma": np.eye(2)}}))
    with pytest.raises(ReferenceStatisticsError, match="refusing the global .*system"):
        load_reference(crafted, "fid")
