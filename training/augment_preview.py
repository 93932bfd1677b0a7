"""What the stain jitter does to real patches, one row per domain, before a study trains with it.

    python -m training.augment_preview --manifest ../shared/data/ami-br/manifest.csv \
        --sigma 0.05 0.2 0.4 --out benchmarks/results/stain_preview.jpg

Each row is one patch of a domain (the manifest's ``--by`` column; a row without it falls back to
the next column in ``--by``, so TUPAC16, which has no scanner, is its own row by Origin), decoded as
training decodes it, labelled with the mean stain densities of a few of the domain's patches (the
jitter's scale: its bias is added to these). Then, for each ``--sigma`` (``augment.hed_sigma``), a few draws of
``BatchAugment.photometric`` with the stain jitter always on and blur and noise off, every other
setting as ``training/config.py``'s defaults: the same draws across sigmas, so a column pair differs
only in the range. Picking a range that looks wrong here costs nothing; one that trains wrong
costs a study.

``--stain-norm`` adds a column of each patch after Reinhard normalisation (``data.stain_norm=reinhard``,
:mod:`amf.stain`) onto the target of the patches drawn (a training run fits it on all of its patches),
and the jitter then acts on that, as in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from amf.errors import InputError
from amf.manifest import decode_image
from training.augment import BatchAugment, stain_densities
from training.config import AugmentConfig
from training.data import read_rows


def domain_patches(manifest: str, by: list[str], per_domain: int, seed: int) -> dict[str, list[Path]]:
    """A few patches of every domain, drawn reproducibly; domains in the manifest's order."""
    paths, _, _, meta = read_rows([manifest], [], by)
    domains: dict[str, list[Path]] = {}
    for i, path in enumerate(paths):
        name = next((meta[k][i] for k in by if meta[k][i]), "unknown")
        domains.setdefault(name, []).append(path)
    rng = np.random.default_rng(seed)
    return {d: [ps[j] for j in sorted(rng.choice(len(ps), min(per_domain, len(ps)), replace=False))]
            for d, ps in domains.items()}


def stain_draws(images: torch.Tensor, sigmas: list[float], draws: int, seed: int,
                bias: float = AugmentConfig.hed_bias) -> dict[float, torch.Tensor]:
    """Per sigma, ``draws`` jittered copies of each image (N x draws x 3 x H x W), the generator reseeded
    for every sigma so the draws share their random numbers."""
    base = AugmentConfig(hed_p=1.0, hed_bias=bias, blur_p=0.0, noise_p=0.0)
    out = {}
    batch = images.repeat_interleave(draws, 0)
    for sigma in sigmas:
        aug = BatchAugment(dataclasses.replace(base, hed_sigma=sigma), seed=seed)
        out[sigma] = aug.photometric(batch).view(images.shape[0], draws, *images.shape[1:])
    return out


def reinhard_rows(decoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each domain's first patch mapped onto the target of all the patches drawn (N x 3 x H x W in [0, 1])."""
    from amf.stain import fit_target, lab_stats, normalize_stains

    as_uint8 = {d: (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy() for d, x in decoded.items()}
    stats = {d: lab_stats(x) for d, x in as_uint8.items()}  # each patch's once: the target's and its own map's
    target = fit_target(np.concatenate(list(stats.values())))
    return {d: torch.from_numpy(normalize_stains(x[:1], stats[d][:1], target)[0]).permute(2, 0, 1).float() / 255
            for d, x in as_uint8.items()}


def plot(rows: dict[str, torch.Tensor], jittered: dict[float, torch.Tensor], bias: float, out: Path,
         densities: dict[str, tuple[torch.Tensor, int]] | None = None,
         normalised: dict[str, torch.Tensor] | None = None) -> Path:
    """One row per domain: its patch, then each sigma's draws (``jittered``: N x draws x 3 x H x W, N in
    the order of ``rows``); ``densities``: per domain, its patches' mean H, E, DAB densities and how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amf.atomic import write_atomic

    sigmas = list(jittered)
    draws = next(iter(jittered.values())).shape[1]
    cols = 1 + bool(normalised) + len(sigmas) * draws
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.35 * cols, 1.5 * len(rows) + 0.5), squeeze=False)
    for r, (domain, image) in enumerate(rows.items()):
        panels = [(image, "original"), *([(normalised[domain], "Reinhard")] if normalised else []),
                  *[(jittered[s][r, d], f"sigma {s:g}" if d == 0 else "") for s in sigmas for d in range(draws)]]
        for c, (img, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and title:
                ax.set_title(title, fontsize=8, loc="left")
        label = domain
        if densities and domain in densities:
            mean, n = densities[domain]
            label += "\nmean of {}: H {:.3f}\nE {:.3f} D {:.3f}".format(n, *mean.tolist())
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"HED stain jitter: alpha in [1 - sigma, 1 + sigma], bias in [-{bias:g}, {bias:g}] per stain "
                 f"channel; {draws} draws per sigma", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = out.suffix.lstrip(".").lower() or "png"  # .jpg: a tenth of the PNG's size for photographs
    extra = {"pil_kwargs": {"quality": 90}} if kind in ("jpg", "jpeg") else {}
    write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=80, format=kind, **extra))
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a manifest in the MIDOG25 CSV columns")
    parser.add_argument("--by", nargs="+", default=["Scanner", "Origin"],
                        help="the column naming a patch's domain, then fallbacks for rows where it is empty")
    parser.add_argument("--sigma", nargs="+", type=float, default=[0.05, 0.2, 0.4],
                        help="augment.hed_sigma values to show")
    parser.add_argument("--bias", type=float, default=AugmentConfig.hed_bias,
                        help="augment.hed_bias, the additive range per stain channel (default: the recipe's)")
    parser.add_argument("--draws", type=int, default=3, help="jittered copies per sigma")
    parser.add_argument("--size", type=int, default=128, help="patch size as training decodes it")
    parser.add_argument("--density-patches", type=int, default=30,
                        help="patches per domain whose mean stain densities label its row (0: none)")
    parser.add_argument("--stain-norm", action="store_true",
                        help="show each patch after Reinhard normalisation too, and jitter that (data.stain_norm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("stain_preview.png"))
    args = parser.parse_args(argv)
    if any(not 0 <= s < 1 for s in args.sigma) or args.bias < 0 or args.draws < 1:
        parser.error("each --sigma lies in [0, 1) (a factor 1 - sigma must stay positive), --bias is not negative "
                     "and --draws is at least 1")
    def tensor(path: Path) -> torch.Tensor:
        return torch.from_numpy(decode_image(path, args.size).copy()).permute(2, 0, 1).float() / 255

    try:
        patches = domain_patches(args.manifest, args.by, max(1, args.density_patches), args.seed)
        decoded = {d: torch.stack([tensor(p) for p in ps]) for d, ps in patches.items()}  # each patch once
    except (InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = {d: x[0] for d, x in decoded.items()}
    densities = {d: (stain_densities(x).mean(0), len(x)) for d, x in decoded.items()
                 } if args.density_patches > 0 else {}
    for d, (mean, n) in densities.items():
        print("{}: mean stain density over {} patches: H {:.4f}, E {:.4f}, DAB {:.4f}".format(d, n, *mean.tolist()))
    normalised = reinhard_rows(decoded) if args.stain_norm else None
    images = torch.stack(list((normalised or rows).values()))
    print(plot(rows, stain_draws(images, args.sigma, args.draws, args.seed, args.bias), args.bias, args.out,
               densities, normalised))
    return 0


if __name__ == "__main__":
    sys.exit(main())
