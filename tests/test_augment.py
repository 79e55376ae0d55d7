"""Tests for the non-leaky augmentation pipe (`diffusers_edm.training.augment`).

Reference numbers come from `tests/data/augment_conformance.{safetensors,json}`, a subset (values unchanged) of
`shared/conformance/06_augment.*`, produced by the official NVlabs/edm `AugmentPipe` (torch 2.13.0, CPU).
Tolerances follow the conformance README: labels atol 1e-6, flips exact, geometric images atol 2e-5.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm.training.augment import AugmentPipe

DATA = Path(__file__).parent / "data"
REF = load_file(str(DATA / "augment_conformance.safetensors"))
META = json.loads((DATA / "augment_conformance.json").read_text())
FORCED_PARAM_KEYS = ("xflip", "yflip", "scale_w", "rotate_theta", "aniso_w", "aniso_r", "translate_w")
FLIP_ONLY = ("xflip", "yflip")
GEOMETRIC_ATOL = 2e-5
LABEL_ATOL = 1e-6


def _assert_images_match(actual: torch.Tensor, expected: torch.Tensor, exact: bool) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if exact:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, atol=GEOMETRIC_ATOL, rtol=0)


def _smooth_images(batch: int) -> torch.Tensor:
    """Band-limited test images (no content near Nyquist), so resampling errors stay small."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    image = torch.stack([torch.sin(1.3 * xx + 0.4 * yy), torch.cos(0.7 * xx - 1.1 * yy + 0.3), xx * yy])
    return image[None].repeat(batch, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Conformance: forced parameters and RNG order.


@pytest.mark.parametrize("case", META["forced"], ids=[case["id"] for case in META["forced"]])
def test_forced_parameters_match_official(case):
    pipe = AugmentPipe(**case["ctor_kwargs"])
    prefix = f"forced.{case['id']}"
    params = {key: REF[f"{prefix}.param.{key}"] for key in FORCED_PARAM_KEYS if f"{prefix}.param.{key}" in REF}
    images, labels = pipe.apply_params(REF["images"], params)
    _assert_images_match(images, REF[f"{prefix}.images"], exact=case["id"] in FLIP_ONLY)
    torch.testing.assert_close(labels, REF[f"{prefix}.labels"], atol=LABEL_ATOL, rtol=0)


def test_forced_passthrough_is_exact_identity_and_close_to_official():
    """All geometric parameters zero: we skip resampling (bitwise identity); the official pipe's filter round trip
    moves pixels by ~7.6e-7, well inside the geometric tolerance."""
    pipe = AugmentPipe(**META["passthrough"]["ctor_kwargs"])
    zeros = torch.zeros(4)
    params = {"scale_w": zeros, "rotate_theta": zeros, "aniso_w": zeros, "aniso_r": zeros}
    params["translate_w"] = torch.zeros(2, 4)
    images, labels = pipe.apply_params(REF["images"], params)
    assert torch.equal(images, REF["images"])
    _assert_images_match(images, REF["forced.passthrough.images"], exact=False)
    assert torch.equal(labels, REF["forced.passthrough.labels"])


@pytest.mark.parametrize("case", META["rng_parity"], ids=[case["id"] for case in META["rng_parity"]])
def test_rng_order_matches_official(case):
    pipe = AugmentPipe(**case["ctor_kwargs"])
    torch.manual_seed(case["torch_manual_seed"])
    images, labels = pipe(REF[case["input"]])
    _assert_images_match(images, REF[f"rng.{case['id']}.images"], exact=case["id"] in FLIP_ONLY)
    torch.testing.assert_close(labels, REF[f"rng.{case['id']}.labels"], atol=LABEL_ATOL, rtol=0)


def test_explicit_generator_matches_seeded_global_rng():
    case = next(case for case in META["rng_parity"] if case["id"] == "train_p0.12")
    pipe = AugmentPipe.edm_default(p=0.12)
    generator = torch.Generator().manual_seed(case["torch_manual_seed"])
    images, labels = pipe(REF[case["input"]], generator=generator)
    _assert_images_match(images, REF["rng.train_p0.12.images"], exact=False)
    torch.testing.assert_close(labels, REF["rng.train_p0.12.labels"], atol=LABEL_ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Configuration and label layout.


def test_edm_default_configuration():
    pipe = AugmentPipe.edm_default()
    assert pipe.p == 0.12
    assert pipe.label_dim == 9
    assert pipe.enabled == ("xflip", "yflip", "scale", "rotate_frac", "aniso", "translate_frac")
    assert pipe.multipliers["xflip"] == 1e8
    assert list(pipe.parameters()) == [] and list(pipe.buffers()) == []


def test_label_dim_counts_enabled_columns():
    assert AugmentPipe().label_dim == 0
    assert AugmentPipe(scale=1, translate_frac=1).label_dim == 3
    everything = {name: 1 for name in AugmentPipe().multipliers}
    assert AugmentPipe(**everything).label_dim == 19


@pytest.mark.parametrize(
    "key, value, columns, expected",
    [
        ("xflip", torch.tensor([1]), [0], [1.0]),
        ("yflip", torch.tensor([1]), [1], [1.0]),
        ("scale_w", torch.tensor([0.7]), [2], [0.7]),
        ("rotate_theta", torch.tensor([math.pi / 6]), [3, 4], [math.cos(math.pi / 6) - 1, 0.5]),
        ("aniso_w", torch.tensor([0.9]), [5], [0.9]),  # aniso_r = 0: w * cos(0), w * sin(0) = 0
        ("aniso_r", torch.tensor([0.4]), [], []),  # w = 0: the frame angle alone is not a transform
        ("translate_w", torch.tensor([[0.3], [-0.6]]), [7, 8], [0.3, -0.6]),
    ],
)
def test_edm_default_label_layout(key, value, columns, expected):
    pipe = AugmentPipe.edm_default()
    params = {"xflip": torch.tensor([0]), "yflip": torch.tensor([0]), "scale_w": torch.zeros(1)}
    params.update({"rotate_theta": torch.zeros(1), "aniso_w": torch.zeros(1), "aniso_r": torch.zeros(1)})
    params.update({"translate_w": torch.zeros(2, 1), key: value})
    _, labels = pipe.apply_params(torch.rand(1, 3, 8, 8), params)
    expected_row = torch.zeros(9)
    expected_row[columns] = torch.tensor(expected)
    torch.testing.assert_close(labels[0], expected_row, atol=LABEL_ATOL, rtol=0)


def test_aniso_label_encodes_frame_angle():
    pipe = AugmentPipe(p=1, aniso=1)
    params = {"aniso_w": torch.tensor([2.0]), "aniso_r": torch.tensor([math.pi / 3])}
    _, labels = pipe.apply_params(torch.rand(1, 1, 8, 8), params)
    torch.testing.assert_close(labels[0], torch.tensor([1.0, math.sqrt(3)]), atol=LABEL_ATOL, rtol=0)


def test_full_pipeline_label_order():
    everything = {name: 1 for name in AugmentPipe().multipliers}
    pipe = AugmentPipe(p=1, **everything)
    one = torch.ones(1, dtype=torch.int64)
    # Every augmentation gets a distinct, recognisable label value.
    params = {
        "xflip": one,
        "yflip": 0 * one,
        "rotate_int": one,  # one quarter turn: cos - 1 = -1, sin = 1
        "translate_int_w": torch.tensor([[1.0], [-0.5]]),  # 2 and -1 px at size 16: labels 1, -0.5
        "scale_w": torch.tensor([0.1]),
        "rotate_theta": torch.zeros(1),
        "aniso_w": torch.zeros(1),
        "aniso_r": torch.zeros(1),
        "translate_w": torch.tensor([[0.2], [0.3]]),
        "brightness_w": torch.tensor([0.4]),
        "contrast_w": torch.tensor([0.5]),
        "lumaflip": one,
        "hue_theta": torch.zeros(1),
        "saturation_w": torch.tensor([0.6]),
    }
    _, labels = pipe.apply_params(torch.rand(1, 3, 16, 16), params)
    expected = [1, 0, -1, 1, 1, -0.5, 0.1, 0, 0, 0, 0, 0.2, 0.3, 0.4, 0.5, 1, 0, 0, 0.6]
    torch.testing.assert_close(labels[0], torch.tensor(expected), atol=LABEL_ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Probabilities and the p = 0 identity.


def test_p_zero_is_exact_identity():
    everything = {name: 1 for name in AugmentPipe().multipliers}
    images = torch.randn(16, 3, 16, 16)
    for pipe in (AugmentPipe.edm_default(p=0), AugmentPipe(p=0, **everything)):
        out, labels = pipe(images)
        assert torch.equal(out, images)
        assert labels.shape == (16, pipe.label_dim) and labels.dtype == torch.float32
        assert torch.count_nonzero(labels) == 0


@pytest.mark.parametrize("p", [0.12, 0.5])
def test_empirical_application_rates(p):
    n = 4000
    pipe = AugmentPipe.edm_default(p=p)
    _, labels = pipe(torch.rand(n, 1, 8, 8), generator=torch.Generator().manual_seed(1234))
    applied = (labels != 0).float().mean(dim=0)
    # xflip: m * p >= 1, so the gate always passes and the flip bit itself is a fair coin.
    expected = {0: 0.5, 1: p / 2, 2: p, 4: p, 5: p, 7: p, 8: p}
    for column, rate in expected.items():
        standard_error = math.sqrt(rate * (1 - rate) / n)
        assert abs(applied[column].item() - rate) < 4 * standard_error, (column, applied[column].item(), rate)
    # At least one augmentation other than xflip: 1 - (1 - p/2)(1 - p)^4 (about 43% at p = 0.12, as in the spec).
    rate = 1 - (1 - p / 2) * (1 - p) ** 4
    any_other = (labels[:, 1:] != 0).any(dim=1).float().mean().item()
    assert abs(any_other - rate) < 4 * math.sqrt(rate * (1 - rate) / n), (any_other, rate)


def test_forward_preserves_shape_dtype_and_channels():
    pipe = AugmentPipe.edm_default(p=1)
    images = torch.rand(3, 5, 12, 10, dtype=torch.float64)
    out, labels = pipe(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float64
    assert labels.shape == (3, 9) and labels.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Pixel blitting and colour transforms (no official vectors: closed-form references).


def test_rotate_int_is_counter_clockwise_like_rotate_frac():
    images = _smooth_images(4)
    quarter_turns = torch.tensor([0, 1, 2, 3])
    rotated, _ = AugmentPipe(p=1, rotate_int=1).apply_params(images, {"rotate_int": quarter_turns})
    for i in range(4):
        assert torch.equal(rotated[i], torch.rot90(images[i], i, dims=(1, 2)))
    # Same direction as the resampled fractional rotation (which differs only by interpolation blur).
    params = {"rotate_theta": quarter_turns * (math.pi / 2)}
    resampled, _ = AugmentPipe(p=1, rotate_frac=1).apply_params(images, params)
    torch.testing.assert_close(rotated, resampled, atol=0.05, rtol=0)
    assert (rotated[1] - resampled[3]).abs().max() > 0.5


def test_translate_int_matches_fractional_translation_by_whole_pixels():
    images = torch.randn(4, 3, 16, 16)
    w = torch.tensor([[0.25, -0.5, 1.0, 0.0], [0.5, 0.75, -1.0, 0.25]])  # whole pixels with max 0.25 and size 16
    integer_pipe = AugmentPipe(p=1, translate_int=1, translate_int_max=0.25)
    shifted, labels = integer_pipe.apply_params(images, {"translate_int_w": w})
    resampled, _ = AugmentPipe(p=1, translate_frac=1, translate_frac_std=0.25).apply_params(images, {"translate_w": w})
    # Both shift content right / down and mirror at the borders; resampling adds only filter round-trip error.
    torch.testing.assert_close(shifted, resampled, atol=GEOMETRIC_ATOL, rtol=0)
    assert torch.equal(shifted[0, :, 2:, 1:], images[0, :, :-2, :-1])  # 1 px right, 2 px down
    torch.testing.assert_close(labels, w.T, atol=LABEL_ATOL, rtol=0)


def _colour(pipe_kwargs: dict, params: dict, images: torch.Tensor) -> torch.Tensor:
    return AugmentPipe(p=1, **pipe_kwargs).apply_params(images, params)[0]


def test_brightness_and_contrast_compose_in_order():
    images = torch.rand(2, 3, 4, 4)
    w_b, w_c = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 2.0])
    out = _colour({"brightness": 1, "contrast": 1}, {"brightness_w": w_b, "contrast_w": w_c}, images)
    offset, gain = (w_b * 0.2).view(2, 1, 1, 1), torch.exp2(w_c * 0.5).view(2, 1, 1, 1)
    torch.testing.assert_close(out, gain * (images + offset), atol=1e-6, rtol=1e-6)
    gray = torch.rand(2, 1, 4, 4)
    out = _colour({"brightness": 1, "contrast": 1}, {"brightness_w": w_b, "contrast_w": w_c}, gray)
    torch.testing.assert_close(out, gain * (gray + offset), atol=1e-6, rtol=1e-6)


def test_lumaflip_negates_luma_and_keeps_chroma():
    images = torch.rand(2, 3, 4, 4)
    out = _colour({"lumaflip": 1}, {"lumaflip": torch.tensor([1, 0])}, images)
    mean = images[0].mean(dim=0, keepdim=True)
    torch.testing.assert_close(out[0], images[0] - 2 * mean, atol=1e-6, rtol=0)
    assert torch.equal(out[1], images[1])
    gray = torch.rand(1, 1, 4, 4)
    flipped = _colour({"lumaflip": 1}, {"lumaflip": torch.tensor([1])}, gray)
    torch.testing.assert_close(flipped, -gray, atol=1e-6, rtol=0)


def test_hue_rotation_by_third_turn_cycles_channels():
    images = torch.rand(1, 3, 4, 4)
    out = _colour({"hue": 1}, {"hue_theta": torch.tensor([2 * math.pi / 3])}, images)
    torch.testing.assert_close(out, images[:, [2, 0, 1]], atol=1e-6, rtol=0)
    gray = torch.rand(1, 1, 4, 4)
    torch.testing.assert_close(_colour({"hue": 1}, {"hue_theta": torch.tensor([1.0])}, gray), gray, atol=1e-6, rtol=0)


def test_saturation_scales_chroma_about_luma():
    images = torch.rand(1, 3, 4, 4)
    out = _colour({"saturation": 1}, {"saturation_w": torch.tensor([-1.0])}, images)
    mean = images.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, mean + 0.5 * (images - mean), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Argument validation.


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p": -0.1},
        {"p": 1.5},
        {"xflip": -1},
        {"scale": float("nan")},
        {"hue": float("inf")},
        {"scale_std": -0.2},
        {"aniso_rotate_prob": 1.5},
        {"translate_int": 1, "translate_int_max": 0},
    ],
)
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        AugmentPipe(**kwargs)


def test_bad_inputs_raise():
    pipe = AugmentPipe.edm_default()
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        pipe(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        pipe(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="keys"):
        pipe.apply_params(torch.rand(1, 3, 8, 8), {"xflip": torch.tensor([1])})
    with pytest.raises(ValueError, match="shape"):
        AugmentPipe(p=1, scale=1).apply_params(torch.rand(2, 3, 8, 8), {"scale_w": torch.zeros(3)})
    with pytest.raises(ValueError, match="square"):
        AugmentPipe(p=1, rotate_int=1)(torch.rand(2, 3, 8, 6))
    with pytest.raises(ValueError, match="1- or 3-channel"):
        AugmentPipe(p=1, brightness=1)(torch.rand(2, 2, 8, 8))
