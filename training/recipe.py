"""Mix, Align, Distil as one DomainBed-style algorithm: ``update(batch) -> losses``.

Each part switches off on its own, so ERM is this class with all three off.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amf.backbones import model_input, resolve_backbone
from amf.network import AtypicalClassifier
from amf.predict import autocast_for
from training.align import DomainAlignment
from training.augment import BatchAugment
from training.config import Config
from training.distil import EmaTeacher, distillation_loss, sigmoid_rampup
from training.lora import LoraAdapters, attach_lora, merge_lora, parameter_counts
from training.mixstyle import StyleMixers, attach_style_mixers


class _StudentStep(nn.Module):
    """Logits and embedding in one ``forward``, so DDP sees one call and syncs every gradient."""

    def __init__(self, model: AtypicalClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.classify_embedding(embedding), embedding


def supervised_loss(logits: torch.Tensor, y: torch.Tensor, kind: str, class_weights: torch.Tensor | None,
                    gamma: float, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if kind == "focal":
        logp = F.log_softmax(logits, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        return (-(1 - logp.exp()).pow(gamma) * logp).mean()
    weight = class_weights if kind == "weighted_ce" else None
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=smoothing)


def last_stage_parameters(model: AtypicalClassifier) -> list[nn.Parameter]:
    """The backbone's last feature stage (timm's ``feature_info``), where the loss terms' gradients are compared."""
    info = getattr(model.backbone, "feature_info", None)
    name = info[-1]["module"] if info else None
    stage = model.backbone.get_submodule(name) if name else model.backbone
    params = [p for p in stage.parameters() if p.requires_grad]
    # A frozen last stage without adapters: the refinement (or the head) is where the terms meet.
    return params or [p for p in model.refine.parameters() if p.requires_grad] or list(model.classifier.parameters())


class MixAlignDistil:
    def __init__(self, cfg: Config, model: AtypicalClassifier, device: torch.device, steps_per_epoch: int,
                 class_counts: list[int], ddp: bool = False, align_labels: list[str] | None = None) -> None:
        """``align_labels``: the weak labels that vary in the training data (default: every weighted one)."""
        self.cfg, self.device, self.ddp = cfg, device, ddp
        # How patches become the network's input: the backbone's normalisation and, for a ViT, its native size.
        self.inputs = model_input(resolve_backbone(cfg.model.backbone, cfg.model.backbone_kwargs), model.backbone,
                                  cfg.data.input_size, cfg.model.resize)
        # LoRA before the teacher and the optimizer: both see the adapters as the trainable parameters.
        self.lora: LoraAdapters | None = attach_lora(model, cfg.model.lora) if cfg.model.lora.rank else None
        self.lora_report: dict[str, Any] | None = None  # set when the adapters are merged
        self.parameter_counts = parameter_counts(model)
        self.student = model.to(device).to(memory_format=torch.channels_last)
        # The teacher is copied before any style mixer hooks the student: it sees clean views only.
        self.teacher = EmaTeacher(model, cfg.distil.decay).to(device) if cfg.distil.enabled else None
        self.mixers: StyleMixers | None = None
        if cfg.mix.enabled:
            self.mixers = attach_style_mixers(model, cfg.mix.stages, p=cfg.mix.p, alpha=cfg.mix.alpha,
                                              mix=cfg.mix.mode)
        self.align: DomainAlignment | None = None
        if cfg.align.enabled:
            weights = {k: w for k, w in cfg.align.label_weights.items() if align_labels is None or k in align_labels}
            self.align = DomainAlignment(cfg.align.kind, weights, normalize=cfg.align.normalize)
        self.augment = BatchAugment(cfg.augment, seed=cfg.run.seed, device=device)
        step_module: nn.Module = _StudentStep(model)
        if ddp:
            step_module = nn.parallel.DistributedDataParallel(step_module)
        self.step_module = step_module
        if cfg.run.compile:
            self.step_module = torch.compile(self.step_module)
        o = cfg.optim
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:  # a frozen backbone (LoRA) holds no optimizer state
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=o.lr)
        self.total_steps = max(1, o.epochs * steps_per_epoch)
        self.warmup_steps = int(o.warmup_epochs * steps_per_epoch)
        self.rampup_steps = int(cfg.distil.rampup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        counts = torch.tensor(class_counts, dtype=torch.float32)
        self.class_weights = (counts.sum() / (len(counts) * counts.clamp_min(1))).to(device)
        self.step = 0
        self.use_cuda_amp = device.type == "cuda" and cfg.run.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_cuda_amp)
        self._probe_params = last_stage_parameters(model)

    def _lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _autocast(self) -> torch.autocast:
        return autocast_for(self.device, self.cfg.run.amp, cpu_bf16=self.cfg.run.cpu_bf16)

    def student_teacher_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student (geometric + photometric) and teacher (geometric only) views of one uint8 NHWC batch."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        clean = self.augment.geometric(x)
        perturbed = self.augment.photometric(clean)
        return self.inputs(perturbed), self.inputs(clean)

    def _probe_due(self) -> bool:
        every = self.cfg.run.grad_probe_every
        return every > 0 and not self.ddp and self.step % every == 0

    def _gradient_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each weighted loss term's gradient norm at the backbone's last stage, and its share of the supervised one.

        Autograd on the retained graph, down to the last stage only: a few percent of a step when
        run every ``run.grad_probe_every`` steps.
        """
        scale = self.scaler.get_scale() if self.use_cuda_amp else 1.0  # fp16 gradients underflow unscaled
        norms: dict[str, float] = {}
        for name, term in terms.items():
            if not term.requires_grad:
                continue
            grads = torch.autograd.grad(term * scale, self._probe_params, retain_graph=True, allow_unused=True)
            squares = [g.float().pow(2).sum() for g in grads if g is not None]
            norms[name] = float(torch.stack(squares).sum().sqrt()) / scale if squares else 0.0
        out = {f"grad_norm/{k}": v for k, v in norms.items()}
        sup = norms.get("supervised", 0.0)
        out.update({f"grad_share/{k}": v / sup for k, v in norms.items() if k != "supervised" and sup > 0})
        return out

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step; returns each loss term (unweighted), the weights in force and the lr."""
        cfg = self.cfg
        self.student.train()
        y = batch["labels"].to(self.device)
        student_x, clean_x = self.student_teacher_views(batch["images"])
        if self.mixers is not None:
            self.mixers.set_sites(batch["sites"].to(self.device))
        with self._autocast():
            logits, embedding = self.step_module(student_x)
        sup = supervised_loss(logits, y, cfg.optim.loss, self.class_weights, cfg.optim.focal_gamma,
                              cfg.optim.label_smoothing)
        weighted = {"supervised": sup}  # each term as it enters the loss
        losses = {"supervised": float(sup.detach())}
        if self.align is not None:
            codes = {k: v.to(self.device) for k, v in batch["weak_labels"].items()}
            align_loss, parts = self.align(embedding, y, codes)
            weighted["align"] = cfg.align.weight * align_loss
            losses["align"] = float(align_loss.detach())
            losses.update({f"align/{k}": v for k, v in parts.items()})
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                teacher_logits = self.teacher(clean_x)
            ramp = sigmoid_rampup(self.step, self.rampup_steps)
            kd = distillation_loss(logits, teacher_logits, cfg.distil.temperature)
            weighted["distil"] = cfg.distil.weight * ramp * kd
            losses["distil"] = float(kd.detach())
            losses["distil_ramp"] = ramp
        loss = torch.stack(list(weighted.values())).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {self.step}; lower optim.lr")
        if self._probe_due() and len(weighted) > 1:
            losses.update(self._gradient_norms(weighted))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.teacher is not None:
            losses["ema_decay"] = self.teacher.update(self.student)
        self.step += 1
        losses["loss"] = float(loss.detach())
        losses["lr"] = self.optimizer.param_groups[0]["lr"]
        return losses

    def shipped_student(self) -> AtypicalClassifier:
        """The student as it ships: no training hook attached and, after LoRA, the adapters merged into
        the weights. Training is over after this: a LoRA teacher, which ran the adapters' EMA through the
        student's modules, is dropped with them."""
        if self.mixers is not None:
            self.mixers.remove()
            self.mixers = None
        if self.lora is not None:
            side = self.inputs.resize_to or self.cfg.data.input_size
            probe = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(self.device)
            change = merge_lora(self.student, self.lora, probe)
            self.lora_report = {**self.lora.report(), "merged": True, "merge_max_logit_change": change}
            self.lora, self.teacher = None, None
        return self.student

    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "augment": self.augment.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        if self.teacher is not None and state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.augment.load_state_dict(state["augment"])
        self.step = state["step"]
