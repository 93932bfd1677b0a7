"""Properties of the recipe as ``MixAlignDistil.update`` runs it, not of its parts alone.

* The alignment and the distillation loss each send a gradient down to the backbone's stem
  (a detached embedding or detached student logits would leave that part acting on nothing).
* The EMA teacher sees the clean view (geometric augmentation only), the student the
  photometrically perturbed one, both from the same geometric draw.
* MixStyle mixes the standard deviation as well as the mean, with exactly the partner and the Beta
  weight it draws.
"""

from __future__ import annotations

import pytest
import torch

from amf.network import create_model
from amf.preprocess import normalize
from training.augment import BatchAugment
from training.config import Config, load_config
from training.distil import distillation_loss
from training.mixstyle import MixStyle
from training.recipe import MixAlignDistil

BATCH = 8
SIZE = 64


def small_recipe(*overrides: str) -> tuple[Config, MixAlignDistil]:
    """The full recipe (mix, align, distil on) around a small random network on the CPU."""
    cfg = load_config(None, ["model.backbone=mobilenetv2_050", "model.pretrained=none", f"data.input_size={SIZE}",
                             "mix.stages=[blocks.1,blocks.3]", "mix.p=1.0", "distil.rampup_epochs=0", *overrides])
    torch.manual_seed(0)
    model = create_model(cfg.model.backbone, attention=cfg.model.attention, drop_rate=cfg.model.drop_rate)
    algo = MixAlignDistil(cfg, model, torch.device("cpu"), steps_per_epoch=4, class_counts=[4, 4],
                          align_labels=["Scanner", "Origin"])
    assert algo.mixers is not None and algo.align is not None and algo.teacher is not None
    return cfg, algo


def a_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (BATCH, SIZE, SIZE, 3), dtype=torch.uint8, generator=g),
        "labels": torch.tensor([0, 1] * (BATCH // 2)),
        "sites": torch.tensor([0, 0, 1, 1, 2, 2, -1, -1]),
        "weak_labels": {"Scanner": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
                        "Origin": torch.tensor([0, 1, 0, 1, 0, 1, 0, 1]),
                        "Species": torch.zeros(BATCH, dtype=torch.long),
                        "Tumor": torch.zeros(BATCH, dtype=torch.long)},
    }


def stem(algo: MixAlignDistil) -> torch.nn.Parameter:
    return algo.student.backbone.conv_stem.weight


# -- gradients reach the backbone ------------------------------------------------------------------
def test_alignment_and_distillation_send_gradients_to_the_stem_in_update() -> None:
    """Through ``update`` itself: its gradient probe, pointed at the stem, measures each weighted term."""
    _, algo = small_recipe("run.grad_probe_every=1")
    algo._probe_params = [stem(algo)]
    losses = algo.update(a_batch())
    for term in ("supervised", "align", "distil"):
        assert f"grad_norm/{term}" in losses, f"the {term} term carries no gradient at all"
        assert losses[f"grad_norm/{term}"] > 1e-4, term  # measured: about 10 (supervised, align), 0.8 (distil)
    assert losses["align"] > 0 and losses["distil"] > 0


def test_alignment_and_distillation_gradients_at_the_stem_by_hand() -> None:
    """The same, from the student's own outputs, without the recipe's probe."""
    cfg, algo = small_recipe()
    batch = a_batch()
    algo.student.train()
    algo.mixers.set_sites(batch["sites"])
    student_x, clean_x = algo.student_teacher_views(batch["images"])
    logits, embedding = algo.step_module(student_x)
    align_loss, _ = algo.align(embedding, batch["labels"], batch["weak_labels"])
    with torch.no_grad():
        teacher_logits = algo.teacher(clean_x)
    kd = distillation_loss(logits, teacher_logits, cfg.distil.temperature)
    for name, loss in (("align", align_loss), ("distil", kd)):
        (grad,) = torch.autograd.grad(loss, [stem(algo)], retain_graph=True, allow_unused=True)
        assert grad is not None, name
        assert float(grad.norm()) > 1e-4, name


# -- the teacher's view ----------------------------------------------------------------------------
def test_the_teacher_gets_the_clean_view_and_the_student_the_perturbed_one() -> None:
    cfg, algo = small_recipe("augment.hed_p=1.0", "augment.noise_p=1.0", "augment.affine_p=1.0")
    batch = a_batch()
    replica = BatchAugment(cfg.augment, seed=cfg.run.seed)
    replica.load_state_dict({k: v.clone() for k, v in algo.augment.state_dict().items()})  # the same draws
    seen: dict[str, torch.Tensor] = {}
    hooks = [algo.teacher.register_forward_pre_hook(lambda m, args: seen.setdefault("teacher", args[0].clone())),
             algo.step_module.register_forward_pre_hook(lambda m, args: seen.setdefault("student", args[0].clone()))]
    try:
        algo.update(batch)
    finally:
        for h in hooks:
            h.remove()
    x = batch["images"].permute(0, 3, 1, 2).float().div(255.0)
    clean = replica.geometric(x)
    perturbed = replica.photometric(clean)
    torch.testing.assert_close(seen["teacher"], normalize(clean), atol=1e-6, rtol=0)
    torch.testing.assert_close(seen["student"], normalize(perturbed), atol=1e-6, rtol=0)
    assert float((seen["teacher"] - seen["student"]).abs().max()) > 0.05  # the two views really differ
    assert float((normalize(clean) - normalize(x)).abs().max()) > 0.05  # and the geometric part acted
    # the teacher's copy carries no style mixer: it was made before the hooks went on the student
    assert not any(m._forward_hooks for m in algo.teacher.modules())
    assert any(m._forward_hooks for m in algo.student.modules())


# -- MixStyle ----------------------------------------------------------------------------------------
def test_mixstyle_mixes_mean_and_std_with_the_partner_and_weight_it_draws() -> None:
    torch.manual_seed(3)
    op = MixStyle(p=1.0, alpha=0.5).train()
    drawn: dict[str, torch.Tensor] = {}
    sample, partners = op._beta.sample, op._partners

    def spy_sample(shape: torch.Size) -> torch.Tensor:
        drawn["lam"] = sample(shape)
        return drawn["lam"]

    def spy_partners(*args: object) -> torch.Tensor:
        drawn["perm"] = partners(*args)
        return drawn["perm"]

    op._beta.sample, op._partners = spy_sample, spy_partners
    b, c = 6, 3
    # every sample has its own per-channel mean and std
    scale = torch.linspace(0.5, 4.0, b * c).view(b, c, 1, 1)
    shift = torch.linspace(-5.0, 5.0, b * c).flip(0).view(b, c, 1, 1)
    x = torch.randn(b, c, 9, 9) * scale + shift
    y = op(x)
    lam, perm = drawn["lam"].view(b, 1, 1, 1), drawn["perm"]
    moved = perm != torch.arange(b)
    assert bool(moved.any()) and bool(((lam.view(-1) > 0.05) & (lam.view(-1) < 0.95) & moved).any())

    # by hand: instance statistics (unbiased variance + eps, as the op defines them), mixed with the partner's
    mu = x.mean((2, 3), keepdim=True)
    sig = (x.var((2, 3), keepdim=True) + op.eps).sqrt()
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    torch.testing.assert_close(y, (x - mu) / sig * sig_mix + mu_mix, atol=1e-5, rtol=1e-5)
    # the output's own statistics are the mixed ones: the mean and the std both moved
    torch.testing.assert_close(y.mean((2, 3), keepdim=True), mu_mix, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y.std((2, 3), keepdim=True), sig_mix, atol=1e-4, rtol=1e-4)
    changed = (y.std((2, 3)) - x.std((2, 3))).abs().amax(1)
    assert bool((changed[moved & (lam.view(-1) < 0.95)] > 0.05).all())  # a mean-only mix would fail here


@pytest.mark.parametrize("mode", ["random", "crossdomain"])
def test_mixstyle_through_the_hooks_is_the_same_op(mode: str) -> None:
    """The forward hook applies exactly MixStyle's output to the stage's output (train mode), nothing in eval."""
    from training.mixstyle import attach_style_mixers

    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", drop_rate=0.0)
    stage = model.backbone.get_submodule("blocks.1")
    outputs: list[torch.Tensor] = []
    stage.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))  # before the mixer's hook
    mixers = attach_style_mixers(model, ["blocks.1"], p=1.0, alpha=0.5, mix=mode)
    mixers.set_sites(torch.tensor([0, 0, 1, 1]))
    after: list[torch.Tensor] = []
    model.backbone.get_submodule("blocks.2").register_forward_pre_hook(lambda m, a: after.append(a[0].detach()))
    x = torch.randn(4, 3, SIZE, SIZE)
    op = mixers.mixers["blocks/1"]
    model.train()
    changed = []
    for seed in range(4):
        torch.manual_seed(seed)
        model(x)
        torch.manual_seed(seed)  # nothing random runs before the stage: replay the op's draws on its output
        torch.testing.assert_close(after[-1], op(outputs[-1]), atol=1e-5, rtol=1e-5)
        changed.append(not torch.allclose(after[-1], outputs[-1], atol=1e-3))
    assert any(changed)  # a draw can pair a sample with itself or weigh it ~1; not every draw
    model.eval()
    model(x)
    torch.testing.assert_close(after[-1], outputs[-1])
