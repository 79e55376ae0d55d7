"""Network preconditioning of EDM (Karras et al. 2022, Eq. 7 and Table 1).

The denoiser is D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)). This module is the single place where the
coefficients are defined; the model, the scheduler's raw-network mode and the training loss all import them. Besides
EDM's own preconditioning it holds the VP, VE and iDDPM columns of Table 1 (the paper's baselines) with their noise
schedules, which the ablation sampler shares.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file

EDM_SIGMA_DATA = 0.5
"""σ_data of the paper (the standard deviation of images scaled to [-1, 1], Sec. 5): the default of every
preconditioning, loss and scheduler argument named `sigma_data`."""


class PreconditioningCoefficients(NamedTuple):
    """The four scalings of Table 1, each broadcastable against the sample."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float = EDM_SIGMA_DATA) -> PreconditioningCoefficients:
    """EDM's preconditioning (Table 1, "ours"), evaluated in the dtype of `sigma`.

    c_skip = σ_data² / (σ² + σ_data²), c_out = σ σ_data / √(σ² + σ_data²), c_in = 1 / √(σ² + σ_data²) and
    c_noise = ¼ ln σ.

    Args:
        sigma (`torch.Tensor`): noise levels σ > 0, any shape; the coefficients have the same shape.
        sigma_data (`float`): standard deviation of the data distribution σ_data (0.5 in the paper).
    """
    sigma_sq_plus_data_sq = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / sigma_sq_plus_data_sq
    c_out = sigma * sigma_data / sigma_sq_plus_data_sq.sqrt()
    c_in = 1 / sigma_sq_plus_data_sq.sqrt()
    c_noise = sigma.log() / 4
    return PreconditioningCoefficients(c_skip, c_out, c_in, c_noise)


# --- VP noise schedule (Song et al. 2021, as parametrised in Table 1 of EDM) -----------------------------------------

VP_BETA_D, VP_BETA_MIN = 19.9, 0.1
"""β_d and β_min of the paper's VP schedule: the VP preconditioning's defaults and the range of the ablation
sampler's "vp" discretisation."""


def vp_sigma(t: torch.Tensor, beta_d: float, beta_min: float) -> torch.Tensor:
    """σ(t) of the variance-preserving schedule (Table 1, "VP"): σ(t) = √(exp(½ β_d t² + β_min t) − 1).

    Evaluated in the dtype of `t` (a Python number becomes a tensor of the default dtype), with the same arithmetic as
    the official `VPPrecond`, so float32 input reproduces its float32 values (e.g. σ(1e-5) = 0.0009765625).

    Args:
        t (`torch.Tensor`): diffusion times t ∈ (0, 1], any shape.
        beta_d (`float`), beta_min (`float`): the schedule's β_d and β_min ([`VP_BETA_D`], [`VP_BETA_MIN`] in the
            paper).
    """
    t = torch.as_tensor(t)
    return ((0.5 * beta_d * t**2 + beta_min * t).exp() - 1).sqrt()


def vp_sigma_derivative(t: torch.Tensor, beta_d: float, beta_min: float) -> torch.Tensor:
    """dσ/dt of the VP schedule: σ'(t) = ½ (β_min + β_d t) (σ(t) + 1/σ(t)), in the dtype of `t`."""
    t = torch.as_tensor(t)
    sigma = vp_sigma(t, beta_d, beta_min)
    return 0.5 * (beta_min + beta_d * t) * (sigma + 1 / sigma)


def vp_sigma_inverse(sigma: torch.Tensor, beta_d: float, beta_min: float) -> torch.Tensor:
    """The time t with σ(t) = σ under the VP schedule: t = (√(β_min² + 2 β_d ln(σ² + 1)) − β_min) / β_d.

    Evaluated in the dtype of `sigma` as the official code does (ln(σ² + 1), not log1p): in float32 this loses most
    digits for small σ, which is what the official `VPPrecond`'s c_noise does.
    """
    sigma = torch.as_tensor(sigma)
    return ((beta_min**2 + 2 * beta_d * (sigma**2 + 1).log()).sqrt() - beta_min) / beta_d


IDDPM_DEFAULT_LEVELS_FILE = Path(__file__).with_name("iddpm_levels_m1000.safetensors")
"""The float32 levels u_0 … u_1000 of the released iDDPM models (M = 1000, C_1 = 0.001, C_2 = 0.008) as the official
`iDDPMPrecond` stores them in its `u` buffer."""


def iddpm_sigma_table(
    M: int = 1000, C_1: float = 0.001, C_2: float = 0.008, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The discrete noise levels u_0 > u_1 > … > u_M = 0 of improved DDPM (Nichol & Dhariwal 2021) in EDM's
    parametrisation (Table 1, "iDDPM"; Appendix C.3.4).

    u_M = 0 and u_{j−1} = √((u_j² + 1) / max(ᾱ_{j−1}/ᾱ_j, C_1) − 1), with ᾱ_j = sin²(π/2 · j / (M (C_2 + 1))). The
    ratio ᾱ_{j−1}/ᾱ_j is computed in float32 (as the official code does, both in its iDDPM preconditioning and in its
    ablation sampler) and the recursion in `dtype`: float32 gives the network's `u` buffer, float64 the table of the
    official ablation sampler's "iddpm" discretisation.

    The float32 recursion amplifies the last-bit differences between CPUs' float32 `sin` and `sqrt` (MKL takes other
    code paths on other processors) to ~1e-7 relative in u_0, so for the released models' parameters the float32
    table is the official buffer itself ([`IDDPM_DEFAULT_LEVELS_FILE`]), identical on every machine.

    Args:
        M (`int`): number of discrete levels of the original model (1000).
        C_1 (`float`): lower clip of ᾱ_{j−1}/ᾱ_j (0.001); it bounds u_0, which would otherwise be infinite.
        C_2 (`float`): offset of the cosine schedule (0.008).
        dtype (`torch.dtype`): dtype of the recursion and of the result (length M + 1).
    """
    if dtype == torch.float32 and (M, C_1, C_2) == (1000, 0.001, 0.008):
        return load_file(IDDPM_DEFAULT_LEVELS_FILE)["u"]
    j = torch.arange(M + 1, dtype=torch.float32)
    alpha_bar = torch.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2
    ratio = (alpha_bar[:-1] / alpha_bar[1:]).clamp(min=C_1)
    u = torch.zeros(M + 1, dtype=dtype)
    for k in range(M, 0, -1):  # each level depends on the next one
        u[k - 1] = ((u[k] ** 2 + 1) / ratio[k - 1] - 1).sqrt()
    return u


# --- Preconditioning variants (Table 1) ------------------------------------------------------------------------------


class Preconditioning(ABC):
    """One column of Table 1: the coefficients of D(x; σ) = c_skip x + c_out F(c_in x; c_noise) and the noise range
    the network supports.

    Attributes:
        sigma_min (`float`), sigma_max (`float`): the range of σ the network was trained for; samplers clamp their
            schedule to it, as the official samplers do.
    """

    name: str
    sigma_min: float
    sigma_max: float

    def round_sigma(self, sigma: torch.Tensor | float, return_index: bool = False) -> torch.Tensor:
        """Snaps noise levels to those the network knows. The identity here; iDDPM networks snap to their discrete
        levels.

        Args:
            sigma (`torch.Tensor` or `float`): noise levels, any shape.
            return_index (`bool`): return the index of the discrete level instead (only for discrete networks).
        """
        if return_index:
            raise ValueError(
                f"round_sigma(return_index=True) needs discrete noise levels; the {self.name!r} preconditioning is"
                " continuous (only 'iddpm' has them)."
            )
        return torch.as_tensor(sigma)

    @abstractmethod
    def coefficients(self, sigma: torch.Tensor) -> PreconditioningCoefficients:
        """c_skip, c_out, c_in and c_noise at `sigma` (any shape), in the dtype of `sigma`."""

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self._arguments().items())
        return f"{type(self).__name__}({arguments})"

    def _arguments(self) -> dict:
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}


class EDMPreconditioning(Preconditioning):
    """EDM's preconditioning (Table 1, "ours"; Eq. 7), for σ ∈ (0, ∞).

    Args:
        sigma_data (`float`, defaults to 0.5): standard deviation of the data σ_data.
    """

    name = "edm"

    def __init__(self, sigma_data: float = EDM_SIGMA_DATA) -> None:
        _check_positive(sigma_data=sigma_data)
        self.sigma_data = sigma_data
        self.sigma_min = 0.0
        self.sigma_max = math.inf

    def coefficients(self, sigma: torch.Tensor) -> PreconditioningCoefficients:
        """See [`edm_preconditioning`]."""
        return edm_preconditioning(torch.as_tensor(sigma), self.sigma_data)


class VPPreconditioning(Preconditioning):
    """The variance-preserving preconditioning of Song et al. (Table 1, "VP"): c_skip = 1, c_out = −σ,
    c_in = 1/√(σ² + 1), c_noise = (M − 1) σ⁻¹(σ).

    The supported range is σ(ε_t) … σ(1), evaluated in float32 as the official `VPPrecond` does, which gives
    0.0009765625 (not ≈ 0.0010005) and 152.16698 with the defaults.

    Args:
        beta_d (`float`, defaults to 19.9), beta_min (`float`, defaults to 0.1): the VP schedule (see [`vp_sigma`]).
        M (`int`, defaults to 1000): number of discrete steps of the original model; c_noise ∈ [0, M − 1].
        epsilon_t (`float`, defaults to 1e-5): smallest training time t.
    """

    name = "vp"

    def __init__(
        self, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN, M: int = 1000, epsilon_t: float = 1e-5
    ) -> None:
        _check_positive(beta_d=beta_d)
        if not beta_min >= 0:
            raise ValueError(f"beta_min must be >= 0, got {beta_min}.")
        _check_steps(M)
        if not 0 < epsilon_t < 1:
            raise ValueError(f"epsilon_t must lie in (0, 1), got {epsilon_t}.")
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t
        self.sigma_min = float(vp_sigma(torch.tensor(epsilon_t, dtype=torch.float32), beta_d, beta_min))
        self.sigma_max = float(vp_sigma(torch.tensor(1.0, dtype=torch.float32), beta_d, beta_min))

    def coefficients(self, sigma: torch.Tensor) -> PreconditioningCoefficients:
        sigma = torch.as_tensor(sigma)
        c_noise = (self.M - 1) * vp_sigma_inverse(sigma, self.beta_d, self.beta_min)
        return PreconditioningCoefficients(torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1).sqrt(), c_noise)


class VEPreconditioning(Preconditioning):
    """The variance-exploding preconditioning of Song et al. (Table 1, "VE"): c_skip = 1, c_out = σ, c_in = 1,
    c_noise = ln(σ/2).

    Args:
        sigma_min (`float`, defaults to 0.02), sigma_max (`float`, defaults to 100): the supported range.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0) -> None:
        _check_positive(sigma_min=sigma_min)
        if not math.isfinite(sigma_max) or not sigma_max > sigma_min:
            raise ValueError(
                "sigma_max must be finite and larger than sigma_min, got"
                f" sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def coefficients(self, sigma: torch.Tensor) -> PreconditioningCoefficients:
        sigma = torch.as_tensor(sigma)
        ones = torch.ones_like(sigma)
        return PreconditioningCoefficients(ones, sigma, ones, (0.5 * sigma).log())


class IDDPMPreconditioning(Preconditioning):
    """The preconditioning of improved DDPM (Table 1, "iDDPM"): c_skip = 1, c_out = −σ, c_in = 1/√(σ² + 1) and
    c_noise = M − 1 − j, where u_j is the discrete level nearest to σ (see [`iddpm_sigma_table`]).

    The network knows only the levels u_0 > … > u_{M−1} (0.0064223 … 20291.17 with the defaults), which are its
    supported range; `round_sigma` snaps σ to the nearest entry of the float32 table u_0 … u_M.

    Args:
        C_1 (`float`, defaults to 0.001), C_2 (`float`, defaults to 0.008): the cosine schedule's constants.
        M (`int`, defaults to 1000): number of discrete levels.
        levels (`list[float]`, *optional*): the table u_0 … u_M itself, when the network's own differs from the one
            recomputed from C_1, C_2, M (an official snapshot's `u` buffer, computed in float32 on another processor,
            may differ in the last bits); stored as float32.
    """

    name = "iddpm"

    def __init__(
        self, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000, levels: list[float] | None = None
    ) -> None:
        _check_positive(C_1=C_1)
        if not C_2 >= 0:
            raise ValueError(f"C_2 must be >= 0, got {C_2}.")
        _check_steps(M)
        self.C_1, self.C_2, self.M = C_1, C_2, M
        if levels is None:
            self.u = iddpm_sigma_table(M, C_1, C_2, torch.float32)
        else:
            self.u = torch.tensor(levels, dtype=torch.float32)
            valid = self.u.shape == (M + 1,) and bool(torch.isfinite(self.u).all()) and float(self.u[-1]) == 0
            if not (valid and bool((self.u[1:] < self.u[:-1]).all())):
                raise ValueError(f"levels must be M + 1 = {M + 1} finite, strictly decreasing noise levels ending at 0.")
        self.sigma_min = float(self.u[M - 1])
        self.sigma_max = float(self.u[0])

    def round_sigma(self, sigma: torch.Tensor | float, return_index: bool = False) -> torch.Tensor:
        """The entry of u nearest to each σ (distance computed in float32 with `torch.cdist`, as the official code),
        in the dtype and shape of `sigma`; with `return_index=True` its index j (int64) instead."""
        sigma = torch.as_tensor(sigma)
        u = self.u.to(sigma.device)
        distances = torch.cdist(sigma.to(torch.float32).reshape(1, -1, 1), u.reshape(1, -1, 1))
        index = distances.argmin(2).reshape(sigma.shape)
        return index if return_index else u[index].to(sigma.dtype)

    def coefficients(self, sigma: torch.Tensor) -> PreconditioningCoefficients:
        sigma = torch.as_tensor(sigma)
        c_noise = (self.M - 1 - self.round_sigma(sigma, return_index=True)).to(sigma.dtype)
        return PreconditioningCoefficients(torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1).sqrt(), c_noise)


PRECONDITIONINGS: dict[str, type[Preconditioning]] = {
    cls.name: cls for cls in (EDMPreconditioning, VPPreconditioning, VEPreconditioning, IDDPMPreconditioning)
}
"""The preconditionings of Table 1 by name."""


def make_preconditioning(name: str, **kwargs) -> Preconditioning:
    """Builds a preconditioning of Table 1 by name.

    Args:
        name (`str`): "edm", "vp", "ve" or "iddpm".
        **kwargs: the arguments of that class ([`EDMPreconditioning`]: sigma_data; [`VPPreconditioning`]: beta_d,
            beta_min, M, epsilon_t; [`VEPreconditioning`]: sigma_min, sigma_max; [`IDDPMPreconditioning`]: C_1, C_2,
            M).
    """
    if name not in PRECONDITIONINGS:
        raise ValueError(f"Unknown preconditioning {name!r}; use one of {', '.join(map(repr, PRECONDITIONINGS))}.")
    cls = PRECONDITIONINGS[name]
    allowed = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {', '.join(unknown)} for the {name!r} preconditioning; it takes"
            f" {', '.join(allowed)}."
        )
    return cls(**kwargs)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}.")


def _check_steps(M: int) -> None:
    if isinstance(M, bool) or not isinstance(M, int) or M < 2:
        raise ValueError(f"M must be an integer >= 2 (number of discrete steps), got {M!r}.")
