"""MixStyle (Zhou et al., ICLR 2021): mix per-channel feature statistics across samples.

Instance mean and std of a feature map carry much of a slide's "style" (scanner, stain), so
swapping them between samples synthesises new sites while keeping the content. The op is
the identity in eval mode and holds no parameters, so nothing of it ships with the model.
"""

from __future__ import annotations

import torch
from torch import nn

MIX_MODES = ("random", "crossdomain")


class MixStyle(nn.Module):
    def __init__(self, p: float = 0.5, alpha: float = 0.1, mix: str = "random", eps: float = 1e-6) -> None:
        super().__init__()
        if mix not in MIX_MODES:
            raise ValueError(f"unknown MixStyle mode {mix!r}; choose one of {MIX_MODES}")
        self.p, self.alpha, self.mix, self.eps = p, alpha, mix, eps
        self._beta = torch.distributions.Beta(alpha, alpha)

    def __repr__(self) -> str:
        return f"MixStyle(p={self.p}, alpha={self.alpha}, mix={self.mix})"

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or self.p <= 0 or x.shape[0] < 2 or torch.rand(()) > self.p:
            return x
        b = x.shape[0]
        # Statistics in fp32: under bf16 autocast the variance of small maps underflows.
        xf = x.float()
        mu = xf.mean(dim=(2, 3), keepdim=True)
        sig = (xf.var(dim=(2, 3), keepdim=True) + self.eps).sqrt()
        # Stop-gradient on the statistics, as in the paper: mixing must not be learned around.
        mu, sig = mu.detach(), sig.detach()
        normed = (xf - mu) / sig
        lam = self._beta.sample((b, 1, 1, 1)).to(x.device)
        perm = self._partners(b, domains, x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (normed * sig_mix + mu_mix).to(x.dtype)

    def _partners(self, b: int, domains: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """Random partners; in cross-domain mode, each partner from another domain where one exists."""
        perm = torch.randperm(b, device=device)
        if self.mix != "crossdomain" or domains is None:
            return perm
        d = domains.to(device)
        other = (d.view(-1, 1) != d.view(1, -1)) & (d.view(1, -1) >= 0)  # b×b: a known, different domain
        has_other = other.any(dim=1)
        if not bool(has_other.any()):
            return perm
        # Pick uniformly among valid partners via random scores masked to the valid set.
        scores = torch.rand(b, b, device=device).masked_fill(~other, -1.0)
        cross = scores.argmax(dim=1)
        return torch.where(has_other, cross, perm)
