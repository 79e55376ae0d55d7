"""Preconditioning variants of Table 1 (EDM, VP, VE, iDDPM) against the official classes' numbers (conformance set
04_precond), closed-form references, and bad input."""

import math

import pytest
import torch

from diffusers_edm.preconditioning import (
    EDMPreconditioning,
    IDDPMPreconditioning,
    VEPreconditioning,
    VPPreconditioning,
    edm_preconditioning,
    iddpm_sigma_table,
    make_preconditioning,
    vp_sigma,
    vp_sigma_derivative,
    vp_sigma_inverse,
)

from .helpers import conformance

# (our class, official class name in 04_precond)
VARIANTS = [
    (EDMPreconditioning, "EDMPrecond"),
    (VPPreconditioning, "VPPrecond"),
    (VEPreconditioning, "VEPrecond"),
    (IDDPMPreconditioning, "iDDPMPrecond"),
]
COEFFICIENTS = ("c_skip", "c_out", "c_in", "c_noise")


def _variant_meta(meta: dict, official_name: str) -> dict:
    return next(v for v in meta["variants"] if v["id"] == official_name)


def _assert_coefficient_close(name: str, actual: torch.Tensor, expected: torch.Tensor, c_noise_atol: float) -> None:
    """README tolerances for 04: rtol 2e-6 on c_skip / c_out / c_in, atol on c_noise (which crosses zero)."""
    actual = actual.to(torch.float64)
    expected = expected.to(torch.float64)
    if name == "c_noise":
        torch.testing.assert_close(actual, expected, rtol=0, atol=c_noise_atol)
    else:
        torch.testing.assert_close(actual, expected, rtol=2e-6, atol=0)


# --- coefficients against the official classes ----------------------------------------------------------------------


@pytest.mark.parametrize("cls,official_name", VARIANTS)
def test_float32_coefficients_match_official(cls, official_name):
    """The official preconditioning casts σ to float32 first; given that float32 σ we reproduce its coefficients,
    VP's float32 c_noise included (README 04: evaluate σ⁻¹ in float32 to match it)."""
    _, tensors = conformance("04_precond")
    sigma = tensors["sigma_f32"]
    coefficients = cls().coefficients(sigma)
    for name, value in zip(COEFFICIENTS, coefficients):
        assert value.dtype == torch.float32 and value.shape == sigma.shape, name
        _assert_coefficient_close(name, value, tensors[f"{official_name}.{name}"], c_noise_atol=2e-6)


@pytest.mark.parametrize("cls,official_name", VARIANTS)
def test_float64_coefficients_match_official(cls, official_name):
    """In float64 the coefficients agree with the official float32 ones to float32 precision; VP's c_noise is then the
    exact value, which the official float32 evaluation misses by up to 5.3e-4 (README 04: atol 1e-3)."""
    _, tensors = conformance("04_precond")
    sigma = tensors["sigma_f32"].to(torch.float64)
    coefficients = cls().coefficients(sigma)
    for name, value in zip(COEFFICIENTS, coefficients):
        assert value.dtype == torch.float64, name
        c_noise_atol = 1e-3 if official_name == "VPPrecond" else 2e-6
        _assert_coefficient_close(name, value, tensors[f"{official_name}.{name}"], c_noise_atol)


def test_float64_coefficients_equal_closed_forms():
    """Table 1 written out independently (with log1p for VP's σ⁻¹, which float64 evaluation must track)."""
    sigmas = [0.002, 0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 80.0]
    sigma = torch.tensor(sigmas, dtype=torch.float64)
    vp = VPPreconditioning().coefficients(sigma)
    ve = VEPreconditioning().coefficients(sigma)
    edm = EDMPreconditioning(sigma_data=0.7).coefficients(sigma)
    for i, s in enumerate(sigmas):
        t = (math.sqrt(0.1**2 + 2 * 19.9 * math.log1p(s**2)) - 0.1) / 19.9
        assert vp.c_skip[i].item() == 1.0 and vp.c_out[i].item() == -s
        assert vp.c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + 1), rel=1e-15)
        assert vp.c_noise[i].item() == pytest.approx(999 * t, rel=1e-9)
        assert ve.c_skip[i].item() == 1.0 and ve.c_out[i].item() == s and ve.c_in[i].item() == 1.0
        assert ve.c_noise[i].item() == pytest.approx(math.log(s / 2), rel=1e-15, abs=1e-15)
        assert edm.c_skip[i].item() == pytest.approx(0.49 / (s**2 + 0.49), rel=1e-15)
        assert edm.c_out[i].item() == pytest.approx(s * 0.7 / math.sqrt(s**2 + 0.49), rel=1e-15)
        assert edm.c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + 0.49), rel=1e-15)
        assert edm.c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-15)


def test_edm_variant_delegates_to_edm_preconditioning():
    sigma = torch.tensor([[0.002], [0.5], [80.0]], dtype=torch.float64)
    for ours, reference in zip(EDMPreconditioning(0.3).coefficients(sigma), edm_preconditioning(sigma, 0.3)):
        assert torch.equal(ours, reference)


def test_coefficients_keep_the_shape_of_sigma():
    sigma = torch.tensor([0.01, 1.0, 50.0]).reshape(3, 1, 1, 1)
    for cls, _ in VARIANTS:
        for value in cls().coefficients(sigma):
            assert value.shape == (3, 1, 1, 1)


# --- supported ranges, iDDPM levels and snapping --------------------------------------------------------------------


@pytest.mark.parametrize("cls,official_name", VARIANTS)
def test_sigma_range_equals_official(cls, official_name):
    """Exactly the official attributes, VP's float32 artefact σ(1e-5) = 0.0009765625 and iDDPM's u[M-1] … u[0]
    included."""
    meta, _ = conformance("04_precond")
    variant = _variant_meta(meta, official_name)
    precond = cls()
    assert precond.sigma_min == variant["sigma_min"]
    assert precond.sigma_max == float(variant["sigma_max"])


def test_iddpm_table_equals_official_buffer_bit_for_bit():
    _, tensors = conformance("04_precond")
    precond = IDDPMPreconditioning()
    assert precond.u.dtype == torch.float32 and len(precond.u) == 1001
    assert torch.equal(precond.u, tensors["iDDPMPrecond.u"])
    assert precond.u[-1].item() == 0.0 and bool((precond.u[:-1] > precond.u[1:]).all())


def test_iddpm_float64_table_follows_the_float64_recursion():
    """The float64 table (ablation sampler) differs from the float32 buffer by float32 round-off only, up to the
    0.048% the json reports for the official buffer vs a float64 recursion."""
    meta, _ = conformance("04_precond")
    reported = _variant_meta(meta, "iDDPMPrecond")["u_float32_official_vs_float64_recurrence_max_rel_diff"]
    u64, u32 = iddpm_sigma_table(dtype=torch.float64), iddpm_sigma_table(dtype=torch.float32)
    assert u64.dtype == torch.float64 and u64[-1].item() == 0.0
    relative = ((u32[:-1].double() - u64[:-1]) / u64[:-1]).abs().max().item()
    assert relative < 2 * reported


@pytest.mark.parametrize("dtype,key", [(torch.float64, "value_f64_input"), (torch.float32, "value_f32_input")])
def test_iddpm_round_sigma_matches_official(dtype, key):
    _, tensors = conformance("04_precond")
    precond = IDDPMPreconditioning()
    sigma = tensors["iDDPMPrecond.round_sigma.input"].to(dtype)
    rounded = precond.round_sigma(sigma)
    assert rounded.dtype == dtype
    assert torch.equal(rounded, tensors[f"iDDPMPrecond.round_sigma.{key}"])
    index = precond.round_sigma(sigma, return_index=True)
    assert index.dtype == torch.int64
    assert torch.equal(index, tensors["iDDPMPrecond.round_sigma.index"])


def test_iddpm_c_noise_is_the_level_index():
    _, tensors = conformance("04_precond")
    precond = IDDPMPreconditioning()
    c_noise = precond.coefficients(tensors["sigma"]).c_noise
    assert torch.equal(c_noise, (999 - tensors["iDDPMPrecond.c_noise_index"]).to(torch.float64))


def test_iddpm_round_sigma_keeps_shape_and_fixes_its_levels():
    precond = IDDPMPreconditioning()
    levels = precond.u[[0, 8, 500, 999]].to(torch.float64).reshape(2, 2, 1)
    assert torch.equal(precond.round_sigma(levels), levels)
    assert precond.round_sigma(levels, return_index=True).flatten().tolist() == [0, 8, 500, 999]
    assert precond.round_sigma(torch.tensor(80.0)).shape == ()


@pytest.mark.parametrize("cls", [EDMPreconditioning, VPPreconditioning, VEPreconditioning])
def test_continuous_round_sigma_is_identity(cls):
    sigma = torch.tensor([0.0123, 7.5], dtype=torch.float64)
    assert torch.equal(cls().round_sigma(sigma), sigma)
    with pytest.raises(ValueError, match="only 'iddpm'"):
        cls().round_sigma(sigma, return_index=True)


# --- VP schedule --------------------------------------------------------------------------------------------------


def test_vp_sigma_and_inverse_match_official():
    _, tensors = conformance("04_precond")
    t = tensors["VPPrecond.sigma_of_t.t"]
    sigma64 = vp_sigma(t, 19.9, 0.1)
    sigma32 = vp_sigma(t.to(torch.float32), 19.9, 0.1)
    assert sigma64.dtype == torch.float64 and sigma32.dtype == torch.float32
    torch.testing.assert_close(sigma64, tensors["VPPrecond.sigma_of_t.f64"], rtol=1e-15, atol=0)
    assert torch.equal(sigma32, tensors["VPPrecond.sigma_of_t.f32"])
    inverse = vp_sigma_inverse(tensors["VPPrecond.sigma_of_t.f64"], 19.9, 0.1)
    torch.testing.assert_close(inverse, tensors["VPPrecond.sigma_inv_of_sigma_of_t.f64"], rtol=1e-15, atol=0)
    torch.testing.assert_close(inverse, t, rtol=1e-9, atol=0)  # a true inverse up to the cancellation in exp(.) - 1


def test_vp_sigma_closed_form_and_derivative():
    """σ(t) = √(expm1(g)) with g = ½ β_d t² + β_min t, and dσ/dt = g'(t) exp(g) / (2σ) by the chain rule (the
    cancellation in exp(g) − 1 costs up to ~1e-12 relative at t = 1e-3)."""
    t = torch.tensor([1e-3, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    sigmas, derivatives = vp_sigma(t, 19.9, 0.1).tolist(), vp_sigma_derivative(t, 19.9, 0.1).tolist()
    for ti, si, di in zip(t.tolist(), sigmas, derivatives):
        g = 0.5 * 19.9 * ti**2 + 0.1 * ti
        sigma = math.sqrt(math.expm1(g))
        assert si == pytest.approx(sigma, rel=1e-11)
        assert di == pytest.approx((19.9 * ti + 0.1) * math.exp(g) / (2 * sigma), rel=1e-11)
    step = 1e-6  # and it is the slope of σ(t) (central difference, away from the stiff start)
    finite_difference = (vp_sigma(t[1:] + step, 19.9, 0.1) - vp_sigma(t[1:] - step, 19.9, 0.1)) / (2 * step)
    torch.testing.assert_close(vp_sigma_derivative(t[1:], 19.9, 0.1), finite_difference, rtol=1e-8, atol=0)


# --- factory and bad input ----------------------------------------------------------------------------------------


def test_factory_builds_each_variant_with_its_arguments():
    assert isinstance(make_preconditioning("edm"), EDMPreconditioning)
    assert make_preconditioning("edm", sigma_data=0.25).sigma_data == 0.25
    vp = make_preconditioning("vp", beta_d=10.0, beta_min=0.2, M=500, epsilon_t=1e-3)
    assert isinstance(vp, VPPreconditioning) and vp.M == 500
    assert vp.sigma_max == pytest.approx(math.sqrt(math.expm1(0.5 * 10.0 + 0.2)), rel=1e-6)
    ve = make_preconditioning("ve", sigma_min=0.05, sigma_max=50.0)
    assert isinstance(ve, VEPreconditioning) and (ve.sigma_min, ve.sigma_max) == (0.05, 50.0)
    iddpm = make_preconditioning("iddpm", M=100)
    assert isinstance(iddpm, IDDPMPreconditioning) and len(iddpm.u) == 101 and iddpm.sigma_min == iddpm.u[99].item()
    assert repr(ve) == "VEPreconditioning(sigma_min=0.05, sigma_max=50.0)"


def test_factory_rejects_unknown_name_listing_the_allowed_ones():
    with pytest.raises(ValueError, match="'edm', 'vp', 've', 'iddpm'"):
        make_preconditioning("ddpm")


@pytest.mark.parametrize("name,kwargs,match", [
    ("edm", dict(sigma_min=0.1), "sigma_min.*takes sigma_data"),
    ("ve", dict(beta_d=1.0), "beta_d.*takes sigma_min, sigma_max"),
    ("vp", dict(C_1=0.1), "C_1.*takes beta_d, beta_min, M, epsilon_t"),
    ("iddpm", dict(sigma_data=0.5), "sigma_data.*takes C_1, C_2, M"),
    ("edm", dict(sigma_data=0.0), "sigma_data must be > 0"),
    ("vp", dict(beta_d=-1.0), "beta_d must be > 0"),
    ("vp", dict(beta_min=-0.1), "beta_min must be >= 0"),
    ("vp", dict(epsilon_t=1.0), "epsilon_t"),
    ("vp", dict(M=1.5), "M must be an integer"),
    ("ve", dict(sigma_min=0.0), "sigma_min must be > 0"),
    ("ve", dict(sigma_min=10.0, sigma_max=5.0), "sigma_max"),
    ("ve", dict(sigma_max=math.inf), "sigma_max must be finite"),
    ("iddpm", dict(C_1=0.0), "C_1 must be > 0"),
    ("iddpm", dict(C_2=-0.5), "C_2 must be >= 0"),
    ("iddpm", dict(M=1), "M must be an integer >= 2"),
])
def test_factory_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_preconditioning(name, **kwargs)
