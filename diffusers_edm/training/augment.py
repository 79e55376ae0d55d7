"""Non-leaky, ADA-style data augmentation for EDM training.

EDM (Karras et al. 2022, arXiv 2206.00364, Sec. 5 "Augmentation regularization" and Appendix F.2) trains its small-data
models with the geometric augmentations of ADA (Karras et al. 2020, arXiv 2006.06676, Appendix B). The augmentation
is made *non-leaky* by conditioning the denoiser on a vector that describes the applied transform (`augment_labels`):
at sampling time the labels are zero ("no augmentation"), so the model generates clean images.

Every augmentation with multiplier `m` is applied to each image independently with probability `m * p` (the gate
is `rand < m * p`). The labels of all enabled augmentations are concatenated in pipeline order:

| augmentation   | label columns                                  |
|----------------|------------------------------------------------|
| xflip          | w in {0, 1}                                    |
| yflip          | w in {0, 1}                                    |
| rotate_int     | cos(k * pi / 2) - 1, sin(k * pi / 2) for k counter-clockwise quarter turns |
| translate_int  | tx / (W * translate_int_max), ty / (H * translate_int_max)              |
| scale          | w, with isotropic scale 2^(w * scale_std)      |
| rotate_frac    | cos(theta) - 1, sin(theta)                     |
| aniso          | w * cos(r), w * sin(r), with anisotropic scale 2^(w * aniso_std) along angle r |
| translate_frac | tx, ty (unit normal), shifts of tx * W * translate_frac_std, ty * H * translate_frac_std px |
| brightness     | w, with offset w * brightness_std              |
| contrast       | w, with gain 2^(w * contrast_std)              |
| lumaflip       | w in {0, 1}                                    |
| hue            | cos(theta) - 1, sin(theta)                     |
| saturation     | w, with chroma gain 2^(w * saturation_std)     |

Non-applied augmentations give zero entries, so an all-zero row means "no augmentation". EDM's `train.py`
configuration (`AugmentPipe.edm_default`) enables xflip (multiplier 1e8, so every image is x-flipped with probability
1/2 whatever `p` is), yflip, scale, rotate_frac, aniso and translate_frac, giving 9 label columns.

The random draws are made in the same order and with the same shapes as the official implementation, so that
`torch.manual_seed(seed)` followed by this pipe reproduces the official augmented images and labels for the flip and
geometric augmentations (checked against the shared conformance vectors). The draw order of rotate_int, translate_int
and the colour transforms follows the same pattern but has no reference vectors.

Deliberate difference from the official pipe: when no image of the batch received a non-identity geometric
transform (for example `p == 0`), the resampling step is skipped and the images come back bitwise unchanged. The
official pipe runs the pad / upsample / grid_sample / downsample round trip anyway, which changes the pixels by
about 1e-6.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["AugmentPipe"]

# Low-pass decomposition filter of the Symlet-6 wavelet ("sym6", 12 taps), from standard wavelet tables
# (identical to PyWavelets' `pywt.Wavelet("sym6").dec_lo`). Used for the 2x oversampled geometric resampling.
_SYM6_DEC_LO = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

# Pipeline order of the augmentations and the number of label columns each contributes.
_LABEL_COLUMNS = {
    "xflip": 1,
    "yflip": 1,
    "rotate_int": 2,
    "translate_int": 2,
    "scale": 1,
    "rotate_frac": 2,
    "aniso": 2,
    "translate_frac": 2,
    "brightness": 1,
    "contrast": 1,
    "lumaflip": 1,
    "hue": 2,
    "saturation": 1,
}

# Keys of the per-image parameter dictionary (see `AugmentPipe.draw_params`), per augmentation.
_PARAM_KEYS = {
    "xflip": ("xflip",),
    "yflip": ("yflip",),
    "rotate_int": ("rotate_int",),
    "translate_int": ("translate_int_w",),
    "scale": ("scale_w",),
    "rotate_frac": ("rotate_theta",),
    "aniso": ("aniso_w", "aniso_r"),
    "translate_frac": ("translate_w",),
    "brightness": ("brightness_w",),
    "contrast": ("contrast_w",),
    "lumaflip": ("lumaflip",),
    "hue": ("hue_theta",),
    "saturation": ("saturation_w",),
}

_GEOMETRIC = ("scale", "rotate_frac", "aniso", "translate_frac")
_COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """diffusers' `--random_flip`: each image mirrored horizontally with probability 1/2, drawn from the global RNG on
    the images' device (checkpointed, so a resumed run draws the same flips)."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(3), images)


def _affine2d(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor, f: torch.Tensor
) -> torch.Tensor:
    """Stacks per-image entries into homogeneous 2D matrices [[a, b, c], [d, e, f], [0, 0, 1]] of shape [N, 3, 3]."""
    zero = torch.zeros_like(a)
    one = torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=-1).reshape(*a.shape, 3, 3)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _affine2d(one, zero, tx, zero, one, ty)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx)
    return _affine2d(sx, zero, zero, zero, sy, zero)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """Rotation R(theta) = [[cos, -sin], [sin, cos]] in pixel coordinates (x right, y down)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _affine2d(cos, -sin, torch.zeros_like(theta), sin, cos, torch.zeros_like(theta))


def _full(n: int, value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full([n], value, dtype=like.dtype, device=like.device)


def _upsample2x(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion, then separable convolution with `taps` (normalised to sum 1) times 2 per axis.

    With a filter of length L the zero-inserted signal is padded by (L + 1) // 2 before and (L - 2) // 2 after each
    axis, so that the output has exactly twice the input size.
    """
    n, c, h, w = images.shape
    length = taps.numel()
    stuffed = images.new_zeros([n, c, h * 2, w * 2])
    stuffed[:, :, ::2, ::2] = images
    before, after = (length + 1) // 2, (length - 2) // 2
    stuffed = F.pad(stuffed, [before, after, before, after])
    # conv2d computes a correlation; reversing the taps makes it a true convolution.
    kernel = (taps * 2).flip(0).to(images.dtype)
    out = F.conv2d(stuffed, kernel.view(1, 1, 1, length).expand(c, 1, 1, length), groups=c)
    return F.conv2d(out, kernel.view(1, 1, length, 1).expand(c, 1, length, 1), groups=c)


def _downsample2x(images: torch.Tensor, taps: torch.Tensor, crop: int) -> torch.Tensor:
    """Separable correlation with `taps` (normalised to sum 1) after cropping `crop` pixels per side, then stride 2."""
    c = images.shape[1]
    length = taps.numel()
    if crop > 0:
        images = images[:, :, crop:-crop, crop:-crop]
    kernel = taps.to(images.dtype)
    out = F.conv2d(images, kernel.view(1, 1, 1, length).expand(c, 1, 1, length), groups=c, stride=(1, 2))
    return F.conv2d(out, kernel.view(1, 1, length, 1).expand(c, 1, length, 1), groups=c, stride=(2, 1))


def _resample_geometric(images: torch.Tensor, g_inv: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Warps `images` [N, C, H, W] with per-image inverse transforms `g_inv` [N, 3, 3].

    `g_inv` maps output pixel coordinates to input pixel coordinates, both with the origin at the image centre
    (x right, y down). The warp is done at 2x resolution to limit aliasing (ADA, Appendix B):
    reflect-pad by the margin the transformed corners need, upsample 2x with the low-pass `taps`, bilinear
    `grid_sample`, low-pass + 2x downsample, crop back to [H, W].
    """
    n, c, h, w = images.shape
    half = taps.numel() // 4
    cx, cy = (w - 1) / 2, (h - 1) / 2

    # Margin: how far the inverse-mapped output corners reach outside the input, plus room for the filters.
    corners = torch.tensor(
        [[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]], dtype=g_inv.dtype, device=g_inv.device
    )
    reach = (g_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, N * 4]
    margin = torch.cat([-reach, reach]).amax(dim=1)  # [left, top, right, bottom]
    margin = margin + torch.tensor([2 * half - cx, 2 * half - cy] * 2, dtype=margin.dtype, device=margin.device)
    margin = margin.clamp(min=0).minimum(torch.tensor([w - 1, h - 1] * 2, dtype=margin.dtype, device=margin.device))
    left, top, right, bottom = (int(v) for v in margin.ceil().tolist())

    # Reflect-pad; the padded image's centre moves by half the asymmetry of the padding.
    images = F.pad(images, [left, right, top, bottom], mode="reflect")
    g_inv = _translate2d(_full(n, (left - right) / 2, g_inv), _full(n, (top - bottom) / 2, g_inv)) @ g_inv

    # Upsample 2x. Centred coordinates double, and with this filter and padding coarse pixel i lands on fine pixel
    # 2i (not the half-pixel-aligned 2i + 0.5), hence the extra half-fine-pixel shift.
    images = _upsample2x(images, taps)
    two, half_px = _full(n, 2.0, g_inv), _full(n, 0.5, g_inv)
    g_inv = _scale2d(two, two) @ g_inv @ _scale2d(1 / two, 1 / two)
    g_inv = _translate2d(-half_px, -half_px) @ g_inv @ _translate2d(half_px, half_px)

    # Resample on an output canvas of (H + 2 * half, W + 2 * half) coarse pixels, in grid_sample's [-1, 1] units.
    out_h, out_w = (h + 2 * half) * 2, (w + 2 * half) * 2
    in_h, in_w = images.shape[2], images.shape[3]
    g_inv = (
        _scale2d(_full(n, 2 / in_w, g_inv), _full(n, 2 / in_h, g_inv))
        @ g_inv
        @ _scale2d(_full(n, out_w / 2, g_inv), _full(n, out_h / 2, g_inv))
    )
    grid = F.affine_grid(g_inv[:, :2, :].to(images.dtype), [n, c, out_h, out_w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Downsample 2x with the same low-pass; the crop removes the extra 2 * half coarse pixels.
    crop = 2 * half - (taps.numel() - 1) // 2
    return _downsample2x(images, taps, crop)


def _colour_matrix_apply(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Applies per-image homogeneous 4x4 colour matrices to RGB (3 channels) or grayscale (1 channel) images."""
    n, c, h, w = images.shape
    matrix = matrix.to(images.dtype)
    flat = images.reshape(n, c, h * w)
    if c == 3:
        flat = matrix[:, :3, :3] @ flat + matrix[:, :3, 3:]
    else:
        # Grayscale: average the RGB rows; a gray pixel v is the RGB vector (v, v, v).
        gray = matrix[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
        flat = flat * gray[:, :, :3].sum(dim=2, keepdim=True) + gray[:, :, 3:]
    return flat.reshape(n, c, h, w)


def _check_nonnegative(what: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}.")


class AugmentPipe(torch.nn.Module):
    r"""Non-leaky augmentation pipeline of EDM (ADA-style), returning augmented images and their augment labels.

    Args:
        p (`float`, defaults to 0.12):
            Augmentation probability in [0, 1]. Each augmentation with multiplier `m` is applied to each image with
            probability `min(m * p, 1)`.
        xflip, yflip (`float`, defaults to 0):
            Multipliers of the horizontal / vertical mirror.
        rotate_int (`float`, defaults to 0):
            Multiplier of rotation by a random multiple of 90 degrees (square images only).
        translate_int, translate_int_max (`float`, defaults to 0 and 0.125):
            Multiplier of integer translation, uniform in +-`translate_int_max` of the image size, reflect-wrapped.
        scale, scale_std (`float`, defaults to 0 and 0.2):
            Multiplier of isotropic scaling by 2^(N(0, 1) * scale_std).
        rotate_frac, rotate_frac_max (`float`, defaults to 0 and 1):
            Multiplier of rotation by U(-pi, pi) * rotate_frac_max.
        aniso, aniso_std, aniso_rotate_prob (`float`, defaults to 0, 0.2 and 0.5):
            Multiplier of anisotropic scaling by 2^(N(0, 1) * aniso_std) along an axis that is rotated by U(-pi, pi)
            with probability `aniso_rotate_prob` (else the x axis).
        translate_frac, translate_frac_std (`float`, defaults to 0 and 0.125):
            Multiplier of fractional translation by N(0, 1) * translate_frac_std of the image size.
        brightness, brightness_std (`float`, defaults to 0 and 0.2):
            Multiplier of adding N(0, 1) * brightness_std to every channel.
        contrast, contrast_std (`float`, defaults to 0 and 0.5):
            Multiplier of scaling all channels by 2^(N(0, 1) * contrast_std).
        lumaflip (`float`, defaults to 0):
            Multiplier of mirroring the colour along the luma axis (1, 1, 1) / sqrt(3) (with probability 1/2).
        hue, hue_max (`float`, defaults to 0 and 1):
            Multiplier of rotating the colour around the luma axis by U(-pi, pi) * hue_max.
        saturation, saturation_std (`float`, defaults to 0 and 1):
            Multiplier of scaling the chroma (the colour orthogonal to the luma axis) by 2^(N(0, 1) * saturation_std).

    Colour augmentations accept 1- or 3-channel images; the other augmentations accept any channel count.
    The module has no parameters or buffers, so it moves freely between devices and pickles cheaply.
    """

    def __init__(
        self,
        p: float = 0.12,
        xflip: float = 0,
        yflip: float = 0,
        rotate_int: float = 0,
        translate_int: float = 0,
        translate_int_max: float = 0.125,
        scale: float = 0,
        rotate_frac: float = 0,
        aniso: float = 0,
        translate_frac: float = 0,
        scale_std: float = 0.2,
        rotate_frac_max: float = 1,
        aniso_std: float = 0.2,
        aniso_rotate_prob: float = 0.5,
        translate_frac_std: float = 0.125,
        brightness: float = 0,
        contrast: float = 0,
        lumaflip: float = 0,
        hue: float = 0,
        saturation: float = 0,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1,
        saturation_std: float = 1,
    ):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`p` is the augmentation probability and must lie in [0, 1], got {p}.")
        if not 0.0 <= aniso_rotate_prob <= 1.0:
            raise ValueError(f"`aniso_rotate_prob` is a probability and must lie in [0, 1], got {aniso_rotate_prob}.")
        multipliers = {
            "xflip": xflip,
            "yflip": yflip,
            "rotate_int": rotate_int,
            "translate_int": translate_int,
            "scale": scale,
            "rotate_frac": rotate_frac,
            "aniso": aniso,
            "translate_frac": translate_frac,
            "brightness": brightness,
            "contrast": contrast,
            "lumaflip": lumaflip,
            "hue": hue,
            "saturation": saturation,
        }
        for name, value in multipliers.items():
            _check_nonnegative(f"augmentation multiplier `{name}` (0 disables it)", value)
        magnitudes = {
            "translate_int_max": translate_int_max,
            "scale_std": scale_std,
            "rotate_frac_max": rotate_frac_max,
            "aniso_std": aniso_std,
            "translate_frac_std": translate_frac_std,
            "brightness_std": brightness_std,
            "contrast_std": contrast_std,
            "hue_max": hue_max,
            "saturation_std": saturation_std,
        }
        for name, value in magnitudes.items():
            _check_nonnegative(f"`{name}`", value)
        if translate_int > 0 and translate_int_max == 0:
            raise ValueError("`translate_int_max` must be > 0 when `translate_int` is enabled (labels divide by it).")

        self.p = float(p)
        self.multipliers = {name: float(value) for name, value in multipliers.items()}
        self.translate_int_max = float(translate_int_max)
        self.scale_std = float(scale_std)
        self.rotate_frac_max = float(rotate_frac_max)
        self.aniso_std = float(aniso_std)
        self.aniso_rotate_prob = float(aniso_rotate_prob)
        self.translate_frac_std = float(translate_frac_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)

    @classmethod
    def edm_default(cls, p: float = 0.12, colors: bool = False) -> "AugmentPipe":
        """The configuration of EDM's `train.py --augment=p` (default 0.12): x/y flips, scale, fractional rotation,
        anisotropic scaling and fractional translation, 9 label columns (the networks' `augment_dim`). With
        `colors`, also brightness, contrast, luma flip, hue and saturation (multiplier 1 each; 6 more columns)."""
        color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1) if colors else {}
        return cls(p=p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1, **color)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the augmentations with a multiplier > 0, in pipeline (and label) order."""
        return tuple(name for name, value in self.multipliers.items() if value > 0)

    @property
    def label_dim(self) -> int:
        """Number of augment-label columns produced by the enabled augmentations."""
        return sum(_LABEL_COLUMNS[name] for name in self.enabled)

    def extra_repr(self) -> str:
        active = ", ".join(f"{name}={self.multipliers[name]:g}" for name in self.enabled)
        return f"p={self.p:g}" + (f", {active}" if active else "")

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augments a batch.

        Args:
            images (`torch.Tensor`): batch of shape [N, C, H, W] (floating point).
            generator (`torch.Generator`, *optional*): source of randomness on `images.device`; the global RNG if None.

        Returns:
            `(augmented_images, augment_labels)`: images of the input shape and dtype, and float32 labels of shape
            [N, label_dim].
        """
        self._check_images(images)
        params = self.draw_params(images.shape[0], generator=generator, device=images.device)
        return self.apply_params(images, params)

    def draw_params(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Draws the per-image parameters of all enabled augmentations (already gated: 0 = not applied).

        The draws follow the official order (only for enabled augmentations; verified against the official pipe for
        the flips and the fractional geometric augmentations, which are all that EDM's `train.py` enables):
        xflip `randint(2, [N,1,1,1])`, gate `rand([N,1,1,1])`; yflip the same; rotate_int `randint(4, [N,1,1,1])`,
        gate `rand([N,1,1,1])`; translate_int `rand([2,N])`, gate `rand([1,N])`; scale `randn([N])`, gate `rand([N])`;
        rotate_frac `rand([N])`, gate `rand([N])`; aniso `randn([N])` (w), `rand([N])` (r), gate `rand([N])`, axis
        gate `rand([N])`; translate_frac `randn([2,N])`, gate `rand([1,N])`; brightness, contrast and saturation
        `randn([N])`, gate `rand([N])`; lumaflip `randint(2, [N])`, gate `rand([N])`; hue `rand([N])`, gate
        `rand([N])`.

        Returns:
            A dictionary for `apply_params`: `xflip`, `yflip` (int64 [N] in {0, 1}), `rotate_int` (int64 [N] in 0..3,
            quarter turns counter-clockwise), `translate_int_w` ([2, N] in [-1, 1]), `scale_w`, `rotate_theta`,
            `aniso_w`, `aniso_r`, `translate_w` ([2, N]), `brightness_w`, `contrast_w`, `lumaflip` (int64 [N]),
            `hue_theta`, `saturation_w`; only the keys of the enabled augmentations.
        """
        n = batch_size
        kwargs = {"generator": generator, "device": device}
        params: dict[str, torch.Tensor] = {}

        def gate(value: torch.Tensor, name: str, shape: list[int]) -> torch.Tensor:
            applied = torch.rand(shape, **kwargs) < self.multipliers[name] * self.p
            return torch.where(applied, value, torch.zeros_like(value))

        for name in ("xflip", "yflip"):
            if self.multipliers[name] > 0:
                w = torch.randint(2, [n, 1, 1, 1], **kwargs)
                params[name] = gate(w, name, [n, 1, 1, 1]).reshape(n)
        if self.multipliers["rotate_int"] > 0:
            w = torch.randint(4, [n, 1, 1, 1], **kwargs)
            params["rotate_int"] = gate(w, "rotate_int", [n, 1, 1, 1]).reshape(n)
        if self.multipliers["translate_int"] > 0:
            w = torch.rand([2, n], **kwargs) * 2 - 1
            params["translate_int_w"] = gate(w, "translate_int", [1, n])
        if self.multipliers["scale"] > 0:
            w = torch.randn([n], **kwargs)
            params["scale_w"] = gate(w, "scale", [n])
        if self.multipliers["rotate_frac"] > 0:
            theta = (torch.rand([n], **kwargs) * 2 - 1) * (math.pi * self.rotate_frac_max)
            params["rotate_theta"] = gate(theta, "rotate_frac", [n])
        if self.multipliers["aniso"] > 0:
            w = torch.randn([n], **kwargs)
            r = (torch.rand([n], **kwargs) * 2 - 1) * math.pi
            params["aniso_w"] = gate(w, "aniso", [n])
            keep_axis = torch.rand([n], **kwargs) < self.aniso_rotate_prob
            params["aniso_r"] = torch.where(keep_axis, r, torch.zeros_like(r))
        if self.multipliers["translate_frac"] > 0:
            w = torch.randn([2, n], **kwargs)
            params["translate_w"] = gate(w, "translate_frac", [1, n])
        for name in ("brightness", "contrast"):
            if self.multipliers[name] > 0:
                w = torch.randn([n], **kwargs)
                params[f"{name}_w"] = gate(w, name, [n])
        if self.multipliers["lumaflip"] > 0:
            w = torch.randint(2, [n], **kwargs)
            params["lumaflip"] = gate(w, "lumaflip", [n])
        if self.multipliers["hue"] > 0:
            theta = (torch.rand([n], **kwargs) * 2 - 1) * (math.pi * self.hue_max)
            params["hue_theta"] = gate(theta, "hue", [n])
        if self.multipliers["saturation"] > 0:
            w = torch.randn([n], **kwargs)
            params["saturation_w"] = gate(w, "saturation", [n])
        return params

    def apply_params(
        self, images: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Applies given per-image parameters (as returned by `draw_params`) deterministically.

        This is the whole pipe minus the random draws: it lets tests and tools force the transform parameters.
        `params` must hold exactly the keys of the enabled augmentations (see `draw_params`); zero means "not
        applied".

        Returns:
            `(augmented_images, augment_labels)` as in `forward`.
        """
        self._check_images(images)
        n, c, h, w = images.shape
        params = self._check_params(params, n, images.device)
        labels: list[torch.Tensor] = []

        # Pixel blitting: exact, no resampling.
        if "xflip" in params:
            flip = params["xflip"]
            images = torch.where(flip.view(n, 1, 1, 1) == 1, images.flip(3), images)
            labels.append(flip)
        if "yflip" in params:
            flip = params["yflip"]
            images = torch.where(flip.view(n, 1, 1, 1) == 1, images.flip(2), images)
            labels.append(flip)
        if "rotate_int" in params:
            images, rotate_labels = self._rotate_int(images, params["rotate_int"])
            labels.extend(rotate_labels)
        if "translate_int_w" in params:
            images, translate_labels = self._translate_int(images, params["translate_int_w"])
            labels.extend(translate_labels)

        # Geometric transforms: compose the inverse map (output -> input pixel coordinates), then resample once.
        enabled = self.enabled
        if any(name in enabled for name in _GEOMETRIC):
            g_inv, geometric_labels = self._geometric_inverse(params, n, h, w, images.device)
            labels.extend(geometric_labels)
            identity = torch.eye(3, dtype=g_inv.dtype, device=g_inv.device)
            if not torch.equal(g_inv, identity.expand_as(g_inv)):
                images = _resample_geometric(images, g_inv, self._taps(images.device))

        # Colour transforms: compose a 4x4 homogeneous colour matrix, then apply it once.
        if any(name in enabled for name in _COLOUR):
            if c not in (1, 3):
                raise ValueError(
                    f"Colour augmentations support 1- or 3-channel images, got {c} channels; disable brightness, "
                    "contrast, lumaflip, hue and saturation for other channel counts."
                )
            matrix, colour_labels = self._colour_matrix(params, n, images.device)
            labels.extend(colour_labels)
            identity = torch.eye(4, dtype=matrix.dtype, device=matrix.device)
            if not torch.equal(matrix, identity.expand_as(matrix)):
                images = _colour_matrix_apply(images, matrix)

        if labels:
            label_matrix = torch.cat([label.to(torch.float32).reshape(n, -1) for label in labels], dim=1)
        else:
            label_matrix = torch.zeros([n, 0], dtype=torch.float32, device=images.device)
        return images, label_matrix

    @staticmethod
    def _taps(device: torch.device) -> torch.Tensor:
        taps = torch.tensor(_SYM6_DEC_LO, dtype=torch.float32, device=device)
        return taps / taps.sum()

    @staticmethod
    def _rotate_int(images: torch.Tensor, quarter_turns: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Rotates image i counter-clockwise by `quarter_turns[i]` * 90 degrees (as displayed, row 0 at the top)."""
        n, _, h, w = images.shape
        if h != w:
            raise ValueError(f"`rotate_int` needs square images, got {h}x{w}; set rotate_int=0 for non-square data.")
        k = quarter_turns.view(n, 1, 1, 1)
        rotated = images
        for turns in (1, 2, 3):
            rotated = torch.where(k == turns, torch.rot90(images, turns, dims=(2, 3)), rotated)
        # Same label convention as rotate_frac, with theta = k * pi / 2 (rounded to exact values).
        theta = quarter_turns.to(torch.float64) * (math.pi / 2)
        return rotated, [torch.cos(theta).round() - 1, torch.sin(theta).round()]

    def _translate_int(self, images: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Shifts image content by whole pixels (right / down for positive offsets), mirroring at the borders."""
        n, c, h, width = images.shape
        tx = (w[0] * (width * self.translate_int_max)).round().to(torch.int64)
        ty = (w[1] * (h * self.translate_int_max)).round().to(torch.int64)

        def mirror(index: torch.Tensor, size: int) -> torch.Tensor:
            if size == 1:
                return torch.zeros_like(index)
            period = 2 * size - 2
            index = index.remainder(period)
            return torch.where(index < size, index, period - index)

        cols = mirror(torch.arange(width, device=images.device).view(1, width) - tx.view(n, 1), width)  # [N, W]
        rows = mirror(torch.arange(h, device=images.device).view(1, h) - ty.view(n, 1), h)  # [N, H]
        images = images.gather(3, cols.view(n, 1, 1, width).expand(n, c, h, width))
        images = images.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, width))
        return images, [tx / (width * self.translate_int_max), ty / (h * self.translate_int_max)]

    def _geometric_inverse(
        self, params: dict[str, torch.Tensor], n: int, h: int, w: int, device: torch.device
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Composes the inverse transform (float32 [N, 3, 3]) and the labels of the fractional geometric augmentations:
        G_inv = S(1/s, 1/s) R(theta) [R(-r) S(1/s_a, s_a) R(r)] T(-tx, -ty), R(a) = [[cos a, -sin a], [sin a, cos a]].
        """
        enabled = self.enabled
        g_inv = torch.eye(3, dtype=torch.float32, device=device).expand(n, 3, 3)
        labels: list[torch.Tensor] = []
        if "scale" in enabled:
            sw = params["scale_w"].to(torch.float32)
            s = torch.exp2(sw * self.scale_std)
            g_inv = g_inv @ _scale2d(1 / s, 1 / s)
            labels.append(sw)
        if "rotate_frac" in enabled:
            theta = params["rotate_theta"].to(torch.float32)
            g_inv = g_inv @ _rotate2d(theta)
            labels.extend([torch.cos(theta) - 1, torch.sin(theta)])
        if "aniso" in enabled:
            aw, r = params["aniso_w"].to(torch.float32), params["aniso_r"].to(torch.float32)
            s = torch.exp2(aw * self.aniso_std)
            # Without scaling (w = 0) the frame angle is irrelevant; drop it so that the product is exactly I.
            frame = torch.where(aw != 0, r, torch.zeros_like(r))
            g_inv = g_inv @ _rotate2d(-frame) @ _scale2d(1 / s, s) @ _rotate2d(frame)
            labels.extend([aw * torch.cos(r), aw * torch.sin(r)])
        if "translate_frac" in enabled:
            tw = params["translate_w"].to(torch.float32)
            tx, ty = tw[0] * (w * self.translate_frac_std), tw[1] * (h * self.translate_frac_std)
            g_inv = g_inv @ _translate2d(-tx, -ty)
            labels.extend([tw[0], tw[1]])
        return g_inv, labels

    def _colour_matrix(
        self, params: dict[str, torch.Tensor], n: int, device: torch.device
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Composes the per-image 4x4 colour matrix (later transforms multiply on the left) and the labels."""
        enabled = self.enabled
        eye = torch.eye(4, dtype=torch.float32, device=device)
        matrix = eye.expand(n, 4, 4)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        luma_outer = torch.outer(luma, luma)  # projector onto the luma axis (zero on the homogeneous coordinate)
        labels: list[torch.Tensor] = []
        if "brightness" in enabled:
            bw = params["brightness_w"].to(torch.float32)
            offset = torch.zeros([n, 4, 4], device=device)
            offset[:, :3, 3] = (bw * self.brightness_std).view(n, 1)
            matrix = (eye + offset) @ matrix
            labels.append(bw)
        if "contrast" in enabled:
            cw = params["contrast_w"].to(torch.float32)
            gain = torch.ones([n, 4], device=device)
            gain[:, :3] = torch.exp2(cw * self.contrast_std).view(n, 1)
            matrix = torch.diag_embed(gain) @ matrix
            labels.append(cw)
        if "lumaflip" in enabled:
            flip = params["lumaflip"]
            matrix = (eye - 2 * luma_outer * flip.to(torch.float32).view(n, 1, 1)) @ matrix
            labels.append(flip)
        if "hue" in enabled:
            theta = params["hue_theta"].to(torch.float32)
            matrix = self._rotate_about_luma(theta) @ matrix
            labels.extend([torch.cos(theta) - 1, torch.sin(theta)])
        if "saturation" in enabled:
            sw = params["saturation_w"].to(torch.float32)
            gain = torch.exp2(sw * self.saturation_std).view(n, 1, 1)
            chroma_projector = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)) - luma_outer
            matrix = (eye + (gain - 1) * chroma_projector) @ matrix
            labels.append(sw)
        return matrix, labels

    @staticmethod
    def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
        """Rodrigues rotation by `theta` [N] about the unit luma axis (1, 1, 1) / sqrt(3), as [N, 4, 4] matrices."""
        n = theta.shape[0]
        a = 1 / math.sqrt(3)
        # R = cos(t) I + sin(t) [k]_x + (1 - cos(t)) k k^T for the unit axis k = (a, a, a).
        cross = a * torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=theta.device)
        outer = torch.full([3, 3], a * a, device=theta.device)
        cos, sin = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
        rotation = cos * torch.eye(3, device=theta.device) + sin * cross + (1 - cos) * outer
        matrix = torch.eye(4, device=theta.device).repeat(n, 1, 1)
        matrix[:, :3, :3] = rotation
        return matrix

    @staticmethod
    def _check_images(images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a tensor of shape [N, C, H, W], got {shape}.")
        if not images.is_floating_point():
            raise ValueError(f"`images` must be floating point (e.g. scaled to [-1, 1]), got dtype {images.dtype}.")

    def _check_params(self, params: dict[str, torch.Tensor], n: int, device: torch.device) -> dict[str, torch.Tensor]:
        expected = [key for name in self.enabled for key in _PARAM_KEYS[name]]
        if sorted(params) != sorted(expected):
            raise ValueError(
                f"`params` must hold exactly the keys of the enabled augmentations {expected}, got {sorted(params)}."
            )
        checked = {}
        for key, value in params.items():
            value = torch.as_tensor(value, device=device)
            shape = (2, n) if key in ("translate_w", "translate_int_w") else (n,)
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"`params['{key}']` must have shape {list(shape)} for a batch of {n}, got {list(value.shape)}."
                )
            checked[key] = value
        return checked
