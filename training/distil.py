"""Distil: an exponential-moving-average teacher and temperature-scaled KL into the student."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class SharedBackboneTeacher(nn.Module):
    """The EMA teacher of a partly frozen student (a LoRA fine-tune): it holds copies of the student's
    trainable parameters only (adapters, refinement, head) and runs the student's own modules with
    them swapped in, so the frozen backbone exists once and memory stays at about one model.

    The student runs in eval mode for the call (no dropout, no style mixing: the mixers' hooks follow
    the hooked stage's mode), and its mode is restored after. The student is not a submodule: the
    teacher's state holds only its own tensors. Frozen buffers (BN statistics) are the student's.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "student", student)  # kept out of the module tree and the state dict
        self.names = [n for n, p in student.named_parameters() if p.requires_grad]
        self.shadow = nn.ParameterDict({n.replace(".", "/"): nn.Parameter(p.detach().clone(), requires_grad=False)
                                        for n, p in student.named_parameters() if p.requires_grad})

    def tracked(self) -> dict[str, torch.Tensor]:
        """Student parameter name -> the teacher's tensor for it."""
        return {n: self.shadow[n.replace(".", "/")] for n in self.names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.student.training
        self.student.eval()
        try:
            return functional_call(self.student, self.tracked(), (x,))
        finally:
            self.student.train(was_training)


class EmaTeacher(nn.Module):
    """A frozen copy of the student whose weights and BN buffers follow it as an EMA.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` so the early teacher is not stuck
    at the random head it started from.

    When some of the student's parameters are frozen (LoRA on a frozen backbone), the teacher is a
    :class:`SharedBackboneTeacher`: the EMA runs over the trainable parameters only, and the frozen
    ones, being constant, are the student's own. With every parameter trainable it is a full copy.
    """

    def __init__(self, student: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        self.shared = any(not p.requires_grad for p in student.parameters())
        if self.shared:
            self.module: nn.Module = SharedBackboneTeacher(student)
        else:
            self.module = copy.deepcopy(student)  # copied before training hooks attach: it sees clean views
        self.module.eval().requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        t = int(self.updates)
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        d = self.current_decay()
        s_params = dict(student.named_parameters())
        if self.shared:
            for name, t_param in self.module.tracked().items():
                t_param.lerp_(s_params[name].detach(), 1.0 - d)
            self.updates += 1
            return d
        for name, t_param in self.module.named_parameters():
            t_param.lerp_(s_params[name].detach(), 1.0 - d)
        s_buffers = dict(student.named_buffers())
        for name, t_buf in self.module.named_buffers():
            s_buf = s_buffers[name]
            if t_buf.is_floating_point():
                t_buf.lerp_(s_buf, 1.0 - d)  # BN running mean/var follow the same EMA
            else:
                t_buf.copy_(s_buf)  # num_batches_tracked is a counter, not a quantity to average
        self.updates += 1
        return d

    def train(self, mode: bool = True) -> EmaTeacher:
        super().train(False)  # the teacher always predicts with its running statistics
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) · T², the Hinton scaling that keeps gradients T-independent."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(-5 (1 - x)²), the mean-teacher ramp: 0 at the start, 1 after ``rampup_steps``."""
    if rampup_steps <= 0:
        return 1.0
    x = min(max(step / rampup_steps, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - x) ** 2))
