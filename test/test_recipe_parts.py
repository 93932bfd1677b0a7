"""The three parts of the recipe, each on its own: Mix, Align, Distil."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from training.align import DomainAlignment, coral, mmd
from training.distil import EmaTeacher, distillation_loss, sigmoid_rampup
from training.mixstyle import MixStyle


# -- Mix -------------------------------------------------------------------------------------------
def test_mixstyle_is_identity_in_eval_mode() -> None:
    op = MixStyle(p=1.0, alpha=0.1).eval()
    x = torch.randn(8, 16, 10, 10)
    assert torch.equal(op(x), x)
    op.sites = torch.arange(8)
    assert torch.equal(op(x), x)


def test_mixstyle_mixes_channel_statistics_in_train_mode() -> None:
    torch.manual_seed(0)
    op = MixStyle(p=1.0, alpha=0.3).train()
    # each sample gets its own style: a distinct per-channel mean and std
    x = torch.randn(8, 4, 12, 12) * torch.arange(1, 9).view(8, 1, 1, 1) + torch.arange(8).view(8, 1, 1, 1) * 5
    y = op(x)
    mu_x, mu_y = x.mean((2, 3)), y.mean((2, 3))
    assert not torch.allclose(mu_x, mu_y, atol=1e-3)
    # the content, the instance-normalised map, is untouched
    norm = lambda t: (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(norm(x), norm(y), atol=1e-3)
    # mixed statistics lie between the sample's own and some other sample's
    assert bool(((mu_y >= mu_x.min(0).values - 1e-4) & (mu_y <= mu_x.max(0).values + 1e-4)).all())


def test_mixstyle_crossdomain_picks_partners_from_other_domains() -> None:
    op = MixStyle(p=1.0, alpha=0.1, mix="crossdomain")
    domains = torch.tensor([0, 0, 0, 1, 1, 2, -1, -1])
    for _ in range(20):
        partners = op._partners(8, domains, torch.device("cpu"))
        for i in range(6):
            assert int(domains[partners[i]]) != int(domains[i])
            assert int(domains[partners[i]]) >= 0


def test_mixstyle_crossdomain_pairs_with_site_zero_too() -> None:
    """Site code 0 is a known site like any other (only -1 is unknown): the lone site-1 sample must
    always get a site-0 partner, and the site-0 samples the site-1 one."""
    op = MixStyle(p=1.0, alpha=0.1, mix="crossdomain")
    domains = torch.tensor([0, 0, 1])
    for _ in range(20):
        partners = op._partners(3, domains, torch.device("cpu")).tolist()
        assert partners[2] in (0, 1) and partners[0] == partners[1] == 2


def test_unknown_or_empty_stages_are_refused_with_the_stage_names() -> None:
    """An empty name would hook the whole network's output; the message lists the stages a user can
    name (the top two levels), not every leaf."""
    from collections import OrderedDict

    from training.mixstyle import StyleMixers

    block = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 3, 1)))
    backbone = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 3, 1), blocks=nn.Sequential(block, nn.Conv2d(3, 3, 1))))
    for stage in ("blocks.9", ""):
        with pytest.raises(ValueError, match="stages are: ") as err:
            StyleMixers(backbone, [stage])
        assert str(err.value).endswith("stages are: stem, blocks, blocks.0, blocks.1")


def test_mixstyle_switched_off_draws_no_random_numbers() -> None:
    """p = 0 must leave the random stream alone, so that a run with the mixers attached at p = 0 is the
    run without them (the augmentations and dropout after it draw the same numbers)."""
    op = MixStyle(p=0.0, alpha=0.1).train()
    x = torch.randn(4, 3, 5, 5)
    state = torch.get_rng_state()
    assert op(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_mixstyle_mixes_a_batch_of_two_and_passes_a_single_sample_through() -> None:
    """Two samples are the smallest batch with a partner; one sample has none, so it passes as it is,
    without drawing a mixing weight or a partner."""
    op = MixStyle(p=1.0, alpha=0.5, mix="crossdomain").train()
    op.sites = torch.tensor([0, 1])  # each sample's partner is the other one
    pair = torch.randn(2, 3, 5, 5) * torch.tensor([1.0, 4.0]).view(2, 1, 1, 1)
    torch.manual_seed(0)
    assert not torch.allclose(op(pair).std((2, 3)), pair.std((2, 3)), atol=1e-3)
    op.sites = None
    one = torch.randn(1, 3, 5, 5)
    state = torch.get_rng_state()
    assert op(one) is one and torch.equal(torch.get_rng_state(), state)


def test_mixstyle_repr_shows_p_and_alpha() -> None:
    # the defaults are Zhou et al.'s (ICLR 2021): p 0.5, Beta(0.1, 0.1), eps 1e-6
    default = MixStyle()
    assert repr(default) == "MixStyle(p=0.5, alpha=0.1, mix=random)" and default.eps == 1e-6
    assert default._beta.concentration0.item() == pytest.approx(0.1)
    assert repr(MixStyle(p=0.3, alpha=0.2)) == "MixStyle(p=0.3, alpha=0.2, mix=random)"
    with pytest.raises(ValueError):
        MixStyle(mix="sideways")


# -- Align -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["coral", "mmd", "centroid"])
def test_alignment_is_zero_for_identical_domains_and_positive_otherwise(kind: str) -> None:
    torch.manual_seed(0)
    emb = torch.randn(12, 6)
    y = torch.tensor([0, 1] * 6)
    align = DomainAlignment(kind, {"Scanner": 1.0})
    same = torch.cat([emb, emb])
    codes = torch.tensor([0] * 12 + [1] * 12)
    zero, _ = align(same, torch.cat([y, y]), {"Scanner": codes})
    assert float(zero) == pytest.approx(0.0, abs=1e-5)
    shifted = torch.cat([emb, emb * 2 + 1])
    positive, parts = align(shifted, torch.cat([y, y]), {"Scanner": codes})
    assert float(positive) > 1e-3
    assert parts["Scanner"] == pytest.approx(float(positive))


def test_alignment_skips_unknown_labels_and_weights_each_label() -> None:
    torch.manual_seed(0)
    emb = torch.randn(16, 4)
    y = torch.tensor([0, 1] * 8)
    codes_known = torch.tensor([0] * 8 + [1] * 8)
    codes_unknown = torch.tensor([0] * 8 + [-1] * 8)  # one known domain only: nothing to align
    align = DomainAlignment("coral", {"Scanner": 2.0, "Origin": 1.0})
    total, parts = align(emb, y, {"Scanner": codes_known, "Origin": codes_unknown})
    assert parts["Origin"] == 0.0
    assert float(total) == pytest.approx(2.0 * parts["Scanner"], rel=1e-5)
    z = (emb - emb.mean(0)) / (emb.std(0) + 1e-5)  # standardised over the whole batch, by hand
    assert float(coral(z[:8], z[8:])) == pytest.approx(parts["Scanner"], rel=1e-5)
    raw = DomainAlignment("coral", {"Scanner": 1.0}, normalize="none")
    assert float(coral(emb[:8], emb[8:])) == pytest.approx(raw(emb, y, {"Scanner": codes_known})[1]["Scanner"],
                                                           rel=1e-5)
    assert float(mmd(emb[:8], emb[:8])) == pytest.approx(0.0, abs=1e-6)


def test_standardised_alignment_does_not_depend_on_the_embedding_scale() -> None:
    torch.manual_seed(0)
    emb = torch.randn(16, 8)
    emb[8:] = emb[8:] * 1.5 + 0.5
    y = torch.tensor([0, 1] * 8)
    codes = {"Scanner": torch.tensor([0] * 8 + [1] * 8)}
    align = DomainAlignment("coral", {"Scanner": 1.0})
    small, big = float(align(emb * 0.1, y, codes)[0]), float(align(emb * 1e3, y, codes)[0])
    assert small == pytest.approx(big, rel=1e-3) and small > 1e-2
    raw = DomainAlignment("coral", {"Scanner": 1.0}, normalize="none")
    assert float(raw(emb * 1e-3, y, codes)[0]) < 1e-5 < float(raw(emb * 1e3, y, codes)[0])


# -- Distil ----------------------------------------------------------------------------------------
def test_ema_update_math_includes_bn_buffers() -> None:
    student = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    teacher = EmaTeacher(student, decay=0.9)
    before = copy.deepcopy(teacher.module.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.add_(2.0)
        student[1].num_batches_tracked.add_(5)
    d = teacher.update(student)
    assert d == pytest.approx(min(0.9, 1 / 10))  # warm-up: (1 + 0) / (10 + 0)
    after = teacher.module.state_dict()
    s = student.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(after[k], d * before[k] + (1 - d) * s[k])
    assert int(after["1.num_batches_tracked"]) == int(s["1.num_batches_tracked"])
    assert teacher.current_decay() == pytest.approx(2 / 11)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.train().module.training


def test_shared_backbone_teacher_follows_only_the_trainable_parameters_as_an_ema() -> None:
    """A partly frozen student (LoRA's case) gets a teacher that holds copies of the trainable
    parameters alone and moves them by the same EMA, counting its updates for the warm-up."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    student[0].requires_grad_(False)  # the frozen "backbone"
    teacher = EmaTeacher(student, decay=0.9)
    assert teacher.shared and sorted(teacher.module.tracked()) == ["2.bias", "2.weight"]
    before = {n: t.clone() for n, t in teacher.module.tracked().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert teacher.update(student) == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)
    for name, t in teacher.module.tracked().items():
        assert torch.allclose(t, 0.1 * before[name] + 0.9 * dict(student.named_parameters())[name])
    assert teacher.current_decay() == pytest.approx(2 / 11)  # exactly one update counted
    x = torch.randn(5, 3)
    with torch.no_grad():  # the frozen layer is the student's own, the head the teacher's
        want = nn.functional.linear(student[1](student[0](x)), teacher.module.tracked()["2.weight"],
                                    teacher.module.tracked()["2.bias"])
        assert torch.allclose(teacher(x), want, atol=1e-6)


def test_the_default_ema_decay_settles_at_0_999() -> None:
    teacher = EmaTeacher(nn.Linear(2, 2))
    teacher.updates.fill_(10**6)  # long past the warm-up
    assert teacher.current_decay() == pytest.approx(0.999)


def test_kl_at_temperature() -> None:
    s = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    temp = 3.0
    ps, pt = torch.softmax(s / temp, 1), torch.softmax(t / temp, 1)
    expected = (pt * (pt.log() - ps.log())).sum(1).mean() * temp**2
    assert float(distillation_loss(s, t, temp)) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_loss(t, t, temp)) == pytest.approx(0.0, abs=1e-7)


def test_rampup_goes_from_small_to_one() -> None:
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(5, 0) == 1.0
    assert sigmoid_rampup(0, 1) == pytest.approx(math.exp(-5))  # a one-step ramp still starts small
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(250, 100) == 1.0  # past the ramp it stays at 1


def test_predictions_ignore_the_callers_train_mode_and_restore_it() -> None:
    """Validation mid-training must score the student as it ships: eval mode, no style mixing."""
    import numpy as np

    from amf.network import create_model
    from amf.predict import predict_proba
    from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from training.mixstyle import attach_style_mixers

    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", drop_rate=0.5)
    attach_style_mixers(model, ["blocks.1"], p=1.0, alpha=0.1)
    pages = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    kwargs = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "tta": "flip2"}
    reference = predict_proba(model.eval(), pages, **kwargs)
    model.train()
    assert np.allclose(predict_proba(model, pages, **kwargs), reference, atol=1e-6)
    assert model.training
