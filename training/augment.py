"""Batch augmentation for H&E patches, on whatever device the batch lives on.

Two halves, because the recipe needs two views of one batch: ``geometric`` (dihedral
flips/rotations and a small affine) is shared by the student and the EMA teacher so their
predictions concern the same picture; ``photometric`` (stain jitter in HED space, mild blur,
noise) perturbs only the student's view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig

# Ruifrok & Johnston's stain vectors, as in scikit-image's rgb2hed.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_LOG_ADJUST = math.log(1e-6)


def _stains(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W in [0, 1] -> N x (H·W) x 3 hematoxylin, eosin and DAB densities (scikit-image's rgb2hed)."""
    pixels = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3).clamp_min(1e-6)
    return (torch.log(pixels) / _LOG_ADJUST) @ _HED_FROM_RGB.to(x.device)


def stain_densities(x: torch.Tensor) -> torch.Tensor:
    """Per image (N x 3 x H x W in [0, 1]), its mean hematoxylin, eosin and DAB densities on the scale
    the stain jitter works in: N x 3."""
    return _stains(x).mean(1)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _coin(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


class BatchAugment:
    def __init__(self, cfg: AugmentConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg})"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    # -- geometric -----------------------------------------------------------------------------
    def geometric(self, x: torch.Tensor) -> torch.Tensor:
        """x: float N×3×H×W in [0, 1]."""
        n, g, dev = x.shape[0], self.generator, x.device
        if self.cfg.dihedral:
            flip = _coin(n, 0.5, g, dev)
            k = torch.randint(0, 4, (n,), generator=g, device=dev)
            x = x.clone()
            x[flip] = x[flip].flip(3)
            for quarter in (1, 2, 3):  # rotate each group once instead of every sample four times
                chosen = k == quarter
                x[chosen] = torch.rot90(x[chosen], quarter, dims=(2, 3))
        if self.cfg.affine_p > 0:
            x = self._affine(x)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g, dev, c = self.generator, x.device, self.cfg
        apply = _coin(n, c.affine_p, g, dev)
        angle = torch.deg2rad(_uniform(n, -c.rotate_deg, c.rotate_deg, g, dev)) * apply
        scale = torch.where(apply, _uniform(n, 1 - c.scale, 1 + c.scale, g, dev), torch.ones(n, device=dev))
        shift = _uniform(2 * n, -c.translate_px, c.translate_px, g, dev).view(n, 2) * apply.view(n, 1)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1), torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # -- photometric ---------------------------------------------------------------------------
    def photometric(self, x: torch.Tensor) -> torch.Tensor:
        x = self._hed_jitter(x)
        x = self._blur(x)
        return self._noise(x)

    def _hed_jitter(self, x: torch.Tensor) -> torch.Tensor:
        n, g, dev, c = x.shape[0], self.generator, x.device, self.cfg
        if c.hed_p <= 0:
            return x
        apply = _coin(n, c.hed_p, g, dev).view(n, 1, 1)
        alpha = torch.where(apply, _uniform(3 * n, 1 - c.hed_sigma, 1 + c.hed_sigma, g, dev).view(n, 1, 3), 1.0)
        beta = torch.where(apply, _uniform(3 * n, -c.hed_bias, c.hed_bias, g, dev).view(n, 1, 3), 0.0)
        stains = _stains(x) * alpha + beta
        rgb = torch.exp(-(stains * -_LOG_ADJUST) @ _RGB_FROM_HED.to(dev))
        return rgb.clamp(0, 1).view(n, x.shape[2], x.shape[3], 3).permute(0, 3, 1, 2).contiguous()

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        g, dev, c = self.generator, x.device, self.cfg
        if c.blur_p <= 0:
            return x
        apply = _coin(n, c.blur_p, g, dev)
        if not bool(apply.any()):
            return x
        sigma = _uniform(n, 0.1, c.blur_sigma_max, g, dev).view(n, 1)
        taps = torch.arange(-2, 3, device=dev, dtype=x.dtype).view(1, 5)
        k1 = torch.exp(-(taps**2) / (2 * sigma**2))
        k1 = k1 / k1.sum(1, keepdim=True)  # n×5 separable kernel per sample
        k2 = (k1.view(n, 5, 1) * k1.view(n, 1, 5)).repeat_interleave(ch, 0).unsqueeze(1)  # (n·ch)×1×5×5
        blurred = F.conv2d(F.pad(x.reshape(1, n * ch, h, w), (2, 2, 2, 2), mode="reflect"), k2, groups=n * ch)
        return torch.where(apply.view(n, 1, 1, 1), blurred.view(n, ch, h, w), x)

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        n, g, dev, c = x.shape[0], self.generator, x.device, self.cfg
        if c.noise_p <= 0:
            return x
        chosen = _coin(n, c.noise_p, g, dev)
        std = _uniform(n, 0.0, c.noise_std_max, g, dev)[chosen].view(-1, 1, 1, 1)
        noise = torch.randn(x[chosen].shape, generator=g, device=dev, dtype=x.dtype)
        x = x.clone()
        x[chosen] = (x[chosen] + noise * std).clamp(0, 1)
        return x
