"""MixStyle (Zhou et al., ICLR 2021): mix per-channel feature statistics across samples.

Instance mean and std of a feature map carry much of a slide's "style" (scanner, stain), so
swapping them between samples synthesises new sites while keeping the content. The op is
the identity in eval mode and holds no parameters. It attaches to a network from outside, as
forward hooks on named backbone stages (:func:`attach_style_mixers`), so the shipped network
never carries it.

On a ViT the hooked blocks give tokens, B×N×C: in token mode (``prefix_tokens`` set, from the
backbone's ``num_prefix_tokens``) the statistics are per channel over the patch tokens, and the
class and register tokens pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from amf.network import is_token_backbone

MIX_MODES = ("random", "crossdomain")


class MixStyle(nn.Module):
    def __init__(self, p: float = 0.5, alpha: float = 0.1, mix: str = "random", eps: float = 1e-6,
                 prefix_tokens: int | None = None) -> None:
        super().__init__()
        if mix not in MIX_MODES:
            raise ValueError(f"unknown MixStyle mode {mix!r}; choose one of {MIX_MODES}")
        self.p, self.alpha, self.mix, self.eps = p, alpha, mix, eps
        self.prefix_tokens = prefix_tokens  # None: B×C×H×W maps; k: B×N×C tokens, the first k left alone
        self._beta = torch.distributions.Beta(alpha, alpha)
        self.sites: torch.Tensor | None = None  # joint site code per sample of the current batch, -1 unknown

    def __repr__(self) -> str:
        tokens = "" if self.prefix_tokens is None else f", tokens after {self.prefix_tokens}"
        return f"MixStyle(p={self.p}, alpha={self.alpha}, mix={self.mix}{tokens})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0 or x.shape[0] < 2 or torch.rand(()) > self.p:
            return x
        if self.prefix_tokens is not None:
            k = self.prefix_tokens
            return torch.cat([x[:, :k], self._mix(x[:, k:], dims=(1,))], dim=1)
        return self._mix(x, dims=(2, 3))

    def _mix(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Mix the per-sample, per-channel statistics over ``dims`` (the positions) with a partner's."""
        b = x.shape[0]
        # Statistics in fp32: under bf16 autocast the variance of small maps underflows.
        xf = x.float()
        mu = xf.mean(dim=dims, keepdim=True)
        sig = (xf.var(dim=dims, keepdim=True) + self.eps).sqrt()
        # Stop-gradient on the statistics, as in the paper: mixing must not be learned around.
        mu, sig = mu.detach(), sig.detach()
        normed = (xf - mu) / sig
        lam = self._beta.sample((b,) + (1,) * (x.dim() - 1)).to(x.device)
        perm = self._partners(b, self.sites, x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (normed * sig_mix + mu_mix).to(x.dtype)

    def _partners(self, b: int, sites: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """Random partners; in cross-domain mode, each partner from another site where one exists."""
        perm = torch.randperm(b, device=device)
        if self.mix != "crossdomain" or sites is None or len(sites) != b:
            return perm
        d = sites.to(device)
        other = (d.view(-1, 1) != d.view(1, -1)) & (d.view(1, -1) >= 0)  # b×b: a known, different site
        has_other = other.any(dim=1)
        if not bool(has_other.any()):
            return perm
        # Pick uniformly among valid partners via random scores masked to the valid set.
        scores = torch.rand(b, b, device=device).masked_fill(~other, -1.0)
        cross = scores.argmax(dim=1)
        return torch.where(has_other, cross, perm)


class StyleMixers(nn.Module):
    """MixStyle ops run after named stages of a backbone, as forward hooks (like timm's FeatureHooks).

    The hooks live on the backbone's stages; the mixers live here, outside the network, so the
    network's state dict, forward signature and saved weights are untouched. Call
    :meth:`set_sites` before each training forward, and :meth:`remove` before shipping.
    """

    def __init__(self, backbone: nn.Module, stages: Iterable[str], make: type[MixStyle] | None = None,
                 **kwargs: float | str) -> None:
        super().__init__()
        modules = dict(backbone.named_modules())
        stages = list(stages)
        for stage in stages:
            if not stage or stage not in modules:
                known = ", ".join(n for n in modules if n.count(".") <= 1 and n)
                raise ValueError(f"no backbone stage {stage!r}; stages are: {known}")
        self.mixers = nn.ModuleDict({s.replace(".", "/"): (make or MixStyle)(**kwargs) for s in stages})
        self._handles: list[RemovableHandle] = [
            modules[s].register_forward_hook(self._hook(s.replace(".", "/"))) for s in stages]

    def _hook(self, key: str) -> Callable[..., torch.Tensor | None]:
        def run(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            # The mixers sit outside the network, so they follow the mode of the stage they hook:
            # model.eval() (validation, the EMA teacher) switches mixing off.
            if not module.training:
                return None
            return self.mixers[key](output)
        return run

    def __repr__(self) -> str:
        return "StyleMixers(" + ", ".join(f"{k.replace('/', '.')}: {m!r}" for k, m in self.mixers.items()) + ")"

    def set_sites(self, sites: torch.Tensor | None) -> None:
        for mixer in self.mixers.values():
            mixer.sites = sites

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def attach_style_mixers(model: nn.Module, stages: Iterable[str], **kwargs: float | str) -> StyleMixers:
    """Hook MixStyle after each named stage of ``model.backbone`` (e.g. ``blocks.1``; a ViT's
    ``blocks.2``, in token mode)."""
    if is_token_backbone(model.backbone):
        kwargs.setdefault("prefix_tokens", model.backbone.num_prefix_tokens)
    return StyleMixers(model.backbone, stages, **kwargs)
