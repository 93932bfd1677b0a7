"""Mix, Align, Distil as one DomainBed-style algorithm: ``update(batch) -> losses``, ``predict(x)``.

Each part switches off on its own, so ERM is this class with all three off.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amf.network import AtypicalClassifier
from amf.preprocess import normalize
from training.align import DomainAlignment
from training.augment import BatchAugment
from training.config import Config
from training.distil import EmaTeacher, distillation_loss, sigmoid_rampup
from training.mixstyle import MixStyle


class _StudentStep(nn.Module):
    """Logits and embedding in one ``forward``, so DDP sees one call and syncs every gradient."""

    def __init__(self, model: AtypicalClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.model.forward_head(self.model.forward_features(x, domains), pre_logits=True)
        return self.model.classify_embedding(embedding), embedding


def supervised_loss(logits: torch.Tensor, y: torch.Tensor, kind: str, class_weights: torch.Tensor | None,
                    gamma: float, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if kind == "focal":
        logp = F.log_softmax(logits, dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        return (-(1 - logp.exp()).pow(gamma) * logp).mean()
    weight = class_weights if kind == "weighted_ce" else None
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=smoothing)


class MixAlignDistil:
    def __init__(self, cfg: Config, model: AtypicalClassifier, device: torch.device, steps_per_epoch: int,
                 class_counts: list[int], ddp: bool = False) -> None:
        self.cfg, self.device = cfg, device
        self.student = model.to(device).to(memory_format=torch.channels_last)
        if cfg.mix.enabled:
            model.attach_style_mixers(
                {s: MixStyle(cfg.mix.p, cfg.mix.alpha, cfg.mix.mode) for s in cfg.mix.stages})
        self.align = DomainAlignment(cfg.align.kind, cfg.align.label_weights) if cfg.align.enabled else None
        self.teacher = EmaTeacher(model, cfg.distil.decay).to(device) if cfg.distil.enabled else None
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

    def _lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _autocast(self) -> torch.autocast:
        if self.use_cuda_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.device.type == "cpu" and self.cfg.run.cpu_bf16)

    def _views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student (perturbed) and teacher (clean) views of one uint8 NHWC batch."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        clean = self.augment.geometric(x)
        perturbed = self.augment.photometric(clean)
        return normalize(perturbed), normalize(clean)

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        self.student.train()
        y = batch["labels"].to(self.device)
        student_x, clean_x = self._views(batch["images"])
        site = batch["sites"].to(self.device)
        with self._autocast():
            logits, embedding = self.step_module(student_x, site)
        loss = supervised_loss(logits, y, cfg.optim.loss, self.class_weights, cfg.optim.focal_gamma,
                               cfg.optim.label_smoothing)
        losses = {"supervised": float(loss.detach())}
        if self.align is not None:
            codes = {k: v.to(self.device) for k, v in batch["domains"].items()}
            align_loss, parts = self.align(embedding, y, codes)
            loss = loss + cfg.align.weight * align_loss
            losses["align"] = float(align_loss.detach())
            losses.update({f"align/{k}": v for k, v in parts.items()})
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                teacher_logits = self.teacher(clean_x)
            ramp = sigmoid_rampup(self.step, self.rampup_steps)
            kd = distillation_loss(logits, teacher_logits, cfg.distil.temperature)
            loss = loss + cfg.distil.weight * ramp * kd
            losses["distil"] = float(kd.detach())
            losses["distil_ramp"] = ramp
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {self.step}; lower optim.lr")
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

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.student.eval()
        return self.student(x)

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
