"""Align: auxiliary losses that pull together the embeddings of different sites.

Each weak label (Scanner, Origin, Species, Tumor) splits the batch into domains; the loss for
a label is the mean over pairs of its domains present in the batch, and the total is the
weighted sum over labels. Samples whose label is unknown (code -1) sit out that label's loss:
an unknown scanner is not a scanner of its own.

Raw CORAL on a 1280-d pooled embedding is tiny (about 1e-3): its covariance entries are
products of small activations, averaged over 1280² cells. With ``normalize="standardize"`` each
dimension is z-scored over the whole batch first (the statistics carry gradient), so the loss
measures domain gaps in units of the batch's own spread and its weight means the same whatever
the backbone's width or activation scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import torch

ALIGN_KINDS = ("coral", "mmd", "centroid")
_MMD_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def coral(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Deep CORAL with DomainBed's mean term: match first and second moments."""
    mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)
    ca, cb = a - mean_a, b - mean_b
    cov_a = ca.t() @ ca / max(len(a) - 1, 1)
    cov_b = cb.t() @ cb / max(len(b) - 1, 1)
    return (mean_a - mean_b).pow(2).mean() + (cov_a - cov_b).pow(2).mean()


def _gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-g * d2) for g in _MMD_GAMMAS) / len(_MMD_GAMMAS)


def mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased MMD² with a mixture of Gaussian kernels (DomainBed's bandwidths)."""
    return _gaussian_kernel(a, a).mean() + _gaussian_kernel(b, b).mean() - 2 * _gaussian_kernel(a, b).mean()


def _class_conditional(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def conditional(a: torch.Tensor, b: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        terms = [fn(a[ya == c], b[yb == c]) for c in torch.unique(torch.cat([ya, yb]))
                 if int((ya == c).sum()) >= 2 and int((yb == c).sum()) >= 2]
        return torch.stack(terms).mean() if terms else a.new_zeros(())
    return conditional


def _centroid_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.mean(0) - b.mean(0)).pow(2).sum()


_PAIR_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "coral": lambda a, b, ya, yb: coral(a, b),
    "mmd": _class_conditional(mmd),
    "centroid": _class_conditional(_centroid_gap),
}


class DomainAlignment(torch.nn.Module):
    """Weighted sum over weak labels of the mean pairwise alignment loss between their domains."""

    def __init__(
        self, kind: str = "coral", weights: Mapping[str, float] | None = None, min_per_domain: int = 2,
        normalize: str = "standardize",
    ) -> None:
        super().__init__()
        if kind not in ALIGN_KINDS:
            raise ValueError(f"unknown alignment {kind!r}; choose one of {ALIGN_KINDS}")
        if normalize not in ("standardize", "none"):
            raise ValueError(f"unknown normalisation {normalize!r}; choose standardize or none")
        self.kind, self.normalize = kind, normalize
        self.weights = dict(weights or {})
        self.min_per_domain = min_per_domain

    def __repr__(self) -> str:
        return f"DomainAlignment(kind={self.kind}, normalize={self.normalize}, weights={self.weights})"

    def active_labels(self, codes: Mapping[str, torch.Tensor]) -> list[str]:
        """The weighted labels with two or more known values in ``codes``: only they can act."""
        return [k for k, w in self.weights.items()
                if w and k in codes and len(torch.unique(codes[k][codes[k] >= 0])) >= 2]

    def label_loss(self, emb: torch.Tensor, y: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        known = codes >= 0
        groups = [code for code in torch.unique(codes[known]).tolist()
                  if int((codes == code).sum()) >= self.min_per_domain]
        pair_loss = _PAIR_LOSSES[self.kind]
        terms = [pair_loss(emb[codes == i], emb[codes == j], y[codes == i], y[codes == j])
                 for i, j in itertools.combinations(groups, 2)]
        return torch.stack(terms).mean() if terms else emb.new_zeros(())

    def forward(
        self, emb: torch.Tensor, y: torch.Tensor, domain_codes: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        emb = emb.float()  # covariances and kernels in fp32, whatever the autocast
        if self.normalize == "standardize" and len(emb) > 1:
            emb = (emb - emb.mean(0, keepdim=True)) / (emb.std(0, keepdim=True) + 1e-5)
        total = emb.new_zeros(())
        parts: dict[str, float] = {}
        for label, weight in self.weights.items():
            if weight == 0 or label not in domain_codes:
                continue
            loss = self.label_loss(emb, y, domain_codes[label])
            parts[label] = float(loss.detach())
            total = total + weight * loss
        return total, parts
