"""Write a ViT model directory of the kind a LoRA run leaves after merging, for CI's container check.

    .venv/bin/python ci/vit_model_dir.py OUT_DIR [--input test/input]

What ``training/train.py`` writes after ``merge_lora``: format 2, ``architecture.backbone`` a plain
timm name (never a hub name) with ``architecture.backbone_kwargs``, ``input_size`` below the
ViT's native side and ``resize_to`` that side, the training default TTA (dihedral4) and
``provenance.lora`` with ``merged: true``; the weights are a plain timm network (no peft keys).
Built with the project's own ``create_model``, ``make_card`` and ``save_model_dir``, random seeded
weights: the check is about loading and running the architecture in the image, not accuracy.

So that a comparison means something, the head is set from the pooled embeddings of the job's
pages (their first principal direction, logits spread over about ±3) and the threshold is put
halfway between the 8th and 9th of the 16 probabilities: both classes occur and no page sits on
the threshold. Prints one line.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BACKBONE = "vit_tiny_patch16_224"
BACKBONE_KWARGS = {"img_size": 64, "depth": 2, "reg_tokens": 2}  # 4×4 patch grid + 1 class + 2 register tokens
INPUT_SIZE = 48  # MIDOG patches centre-cropped to 48 px, resized to the native 64 on the device
NATIVE = BACKBONE_KWARGS["img_size"]
TTA = "dihedral4"  # training's default run.tta
LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.0,
        "target_modules": ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]}
MIN_SPREAD = 1e-3  # np.ptp of the 16 probabilities must exceed this
SEED = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="model directory to write")
    parser.add_argument("--input", type=Path, default=REPO / "test/input", help="job folder (default test/input)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # one line of output only

    import numpy as np
    import torch

    from amf import organizer
    from amf.model_dir import load_model_dir, make_card, save_model_dir
    from amf.network import create_model
    from amf.predict import predict_proba
    from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD, dihedral_views, normalize, prepare_pages
    from amf.stacks import read_stack

    torch.manual_seed(SEED)
    model = create_model(BACKBONE, backbone_kwargs=BACKBONE_KWARGS).eval()
    # What the run trained: rank-r adapters A (r×in) and B (out×r) on each target Linear, the refinement, the head.
    adapted = [m for n, m in model.backbone.named_modules()
               if isinstance(m, torch.nn.Linear) and any(n.endswith(t) for t in LORA["target_modules"])]
    adapters = sum(LORA["rank"] * (m.in_features + m.out_features) for m in adapted)
    outside = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    total = sum(p.numel() for p in model.parameters())
    trainable = adapters + outside

    # The head: logit(atypical) - logit(normal) along the pages' first principal direction.
    pages = prepare_pages(read_stack(organizer.find_stack(args.input)[0]), INPUT_SIZE)
    views = torch.from_numpy(dihedral_views(pages, TTA))  # (V·N)×H×W×3, view-major
    with torch.no_grad():
        x = normalize(views, IMAGENET_MEAN, IMAGENET_STD, NATIVE)
        emb = model.forward_head(model.forward_features(x), pre_logits=True).double()
        emb = emb.view(-1, len(pages), emb.shape[-1]).mean(0)  # N×C, the views' mean
        centred = emb - emb.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scale = 3.0 / float((centred @ direction).abs().max())
        head = model.classifier
        head.weight.zero_()
        head.weight[1] = (scale * direction).float()
        head.bias.copy_(torch.tensor([0.0, float(-scale * (emb.mean(0) @ direction))]))

    provenance = {
        "pretrained": f"none: random weights (torch.manual_seed({SEED})), head from test/input; a CI fixture "
                      "written by ci/vit_model_dir.py",
        "lora": {**LORA, "adapted_modules": len(adapted), "peft": None,
                 "trainable_parameters": int(trainable), "total_parameters": int(total + adapters),
                 "merged": True, "merge_max_logit_change": 0.0},
        "trainable_parameters": int(trainable),
        "torch": torch.__version__,
    }

    def card(threshold: float, source: str) -> dict:
        return make_card(model, backbone=BACKBONE, backbone_kwargs=BACKBONE_KWARGS, drop_rate=0.2,
                         input_size=INPUT_SIZE, resize_to=NATIVE, threshold=threshold, threshold_source=source,
                         tta=TTA, provenance=provenance)

    # The threshold from the saved network's own probabilities (as process.py will compute them).
    save_model_dir(args.out, model, card(0.5, "provisional"))
    loaded = load_model_dir(args.out)
    probs = predict_proba(loaded.model, pages, mean=loaded.card["mean"], std=loaded.card["std"], tta=TTA,
                          resize_to=loaded.resize_to, positive_index=loaded.positive_index)
    shown = args.input.resolve().relative_to(REPO) if args.input.resolve().is_relative_to(REPO) else args.input
    ordered = np.sort(probs)
    half = len(ordered) // 2
    threshold = float((ordered[half - 1] + ordered[half]) / 2)
    save_model_dir(args.out, model, card(threshold, f"halfway between the {half}th and {half + 1}th of the "
                                         f"{len(ordered)} probabilities on {shown}: a CI fixture"))

    written = load_model_dir(args.out).card
    assert written["format_version"] == 2 and written["resize_to"] == NATIVE, written
    assert written["architecture"]["backbone_kwargs"] == BACKBONE_KWARGS, written["architecture"]
    spread = float(np.ptp(probs))
    if not spread > MIN_SPREAD:
        print(f"FAIL: the {len(probs)} probabilities span only {spread:.2e} (<= {MIN_SPREAD:g})", file=sys.stderr)
        return 1
    nearest = float(np.min(np.abs(probs - threshold)))
    print(f"wrote {args.out}: {BACKBONE} {BACKBONE_KWARGS}, input {INPUT_SIZE} resized to {NATIVE}, TTA {TTA}, "
          f"{total / 1e6:.2f} M parameters, format {written['format_version']}; on {len(probs)} pages of "
          f"{shown} P(atypical) {ordered[0]:.3f}..{ordered[-1]:.3f} (ptp {spread:.3f}), "
          f"{int(np.sum(probs >= threshold))} atypical at threshold {threshold:.4f}, nearest page {nearest:.4f} away")
    return 0


if __name__ == "__main__":
    sys.exit(main())
