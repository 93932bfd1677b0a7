"""Mutation testing: how many small, deliberate bugs in the core modules do the tests catch?

    python -m benchmarks.mutation                                # every module in TARGETS
    python -m benchmarks.mutation --modules amf/organizer.py     # some of them (results merge)
    python -m benchmarks.mutation --list --modules amf/metrics.py   # show the mutants, run nothing
    python -m benchmarks.mutation --report                       # rewrite mutation.md from mutation.json
    python -m benchmarks.mutation --recheck --modules amf/metrics.py  # its survivors against today's tests
    python -m benchmarks.mutation --worktree --modules amf/metrics.py --tests test/test_new.py --out /tmp/m.json
                                                                 # what one new test file kills, uncommitted

A small AST mutator of our own (no mutmut: it rewrites files in place and wants its own layout).
Each mutant changes one thing in one module: a comparison operator (``<`` to ``>=``, ``<`` to ``<=``,
``==`` to ``!=``, ``in`` to ``not in``, ...), an arithmetic operator (``+``/``-``, ``*``/``/``, ...),
``and``/``or``, a unary minus or ``not`` dropped, or a constant (``n`` to ``n + 1``, ``0.5`` to ``1.5``,
``True``/``False``). Docstrings, annotations, f-strings and other strings are left alone.

The mutants run in a scratch copy of the repository (``git archive`` of a commit, HEAD by default,
or ``--worktree`` for the working tree as it is), never in the working tree itself: other work keeps
running there. ``../shared`` is linked beside the copy, so tests that need it run as they would here.
For every mutant the module's tests (``TARGETS``) run with ``pytest -x``, fastest files first; a
failing test kills the mutant, passing tests let it survive, and a mutant that runs past
``--timeout`` counts as killed (a hang is caught too). To be quicker about it, a mutant first meets
only the tests that the traced baseline saw run its lines (``benchmarks/line_tests.py``); whatever
survives them still runs the full list, so the selection never decides a verdict. Bytecode caches are off
(``PYTHONDONTWRITEBYTECODE``), so no stale ``.pyc`` of an earlier mutant is ever imported.

An interrupted module resumes where it stopped when the module, its tests and ``test/conftest.py``
are unchanged since (the JSON keeps every measured mutant). Raw results go to
``benchmarks/results/mutation.json`` (merged per module, so runs of different modules add up;
``partial`` says whether every target has results) and a generated ``benchmarks/results/mutation.md``
(kill rate per module, every survivor).
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from amf.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
JSON_OUT = RESULTS / "mutation.json"
MD_OUT = RESULTS / "mutation.md"

# module -> the tests that should catch a bug in it, fastest first (pytest -x stops at the first failure)
TARGETS: dict[str, list[str]] = {
    "amf/organizer.py": ["test/test_organizer.py", "test/test_output_writer.py", "test/test_metrics.py",
                         "test/test_process.py", "test/test_oracles.py", "test/test_leaderboard.py"],
    "amf/metrics.py": ["test/test_metrics_reference.py", "test/test_metrics.py", "test/test_oracles.py",
                       "test/test_leaderboard.py"],
    "amf/predict.py": ["test/test_predict_reference.py", "test/test_recipe_parts.py", "test/test_oracles.py",
                       "test/test_process.py", "test/test_training.py", "test/test_onnx_engine.py"],
    "amf/preprocess.py": ["test/test_preprocess_reference.py", "test/test_stacks.py", "test/test_training.py",
                          "test/test_oracles.py", "test/test_process.py"],
    "training/mixstyle.py": ["test/test_recipe_parts.py", "test/test_recipe_properties.py", "test/test_vit_lora.py",
                             "test/test_learning.py", "test/test_training.py"],
    "training/align.py": ["test/test_align_reference.py", "test/test_recipe_parts.py",
                          "test/test_recipe_properties.py", "test/test_learning.py", "test/test_training.py"],
    "training/distil.py": ["test/test_recipe_parts.py", "test/test_recipe_properties.py", "test/test_learning.py",
                           "test/test_training.py"],
    "training/ensemble.py": ["test/test_ensemble.py", "test/test_threshold_transfer.py"],
    "training/calibration.py": ["test/test_ensemble.py", "test/test_threshold_transfer.py"],
}

# Survivors shown equivalent: (module, code, operator, original, mutated) -> the one-line reason, naming
# why no input tells the two apart. ``code`` is the stripped source line where the mutant starts (a
# short text such as "True" recurs in a module; its line tells the occurrences apart): an edit to that
# line orphans the entry, and the mutant shows as a survivor again until someone looks, rather than a
# new survivor being excused by an old reason. Code that merely moves keeps its entries.
EQUIVALENT: dict[tuple[str, str, str, str, str], str] = {
    (
        "training/distil.py",
        'self.shadow = nn.ParameterDict({n.replace(".", "/"): nn.Parameter(p.detach().clone(), requires_grad=False)',
        "constant False -> True", "False", "(True)"):
        "the shadow copies' requires_grad: EmaTeacher.__init__ calls requires_grad_(False) on the whole "
        "teacher right after, for every student, so the flag is False either way",
    (
        "training/distil.py",
        'def train(self, mode: bool = True) -> EmaTeacher:',
        "constant True -> False", "True", "(False)"):
        "the default of EmaTeacher.train's mode: the method ignores its argument (always super().train(False)), "
        "so teacher.train() and teacher.train(False) behave the same for every teacher",
    # best_threshold's balanced accuracy, which only ranks cuts: a shift keeps every difference, so
    # the argmax and the 1e-12 tie window are the same
    (
        "amf/metrics.py",
        'bacc = ((tpr + 1.0 - fpr) / 2.0)[1:]  # drop the "nothing is atypical" point at +inf',
        "arith + -> -", "tpr + 1.0", "(tpr - 1.0)"):
        "a shift of every cut's score by -1: the same best cut and the same ties on every input",
    (
        "amf/metrics.py",
        'bacc = ((tpr + 1.0 - fpr) / 2.0)[1:]  # drop the "nothing is atypical" point at +inf',
        "constant 1.0 -> 2.0", "1.0", "(2.0)"):
        "a shift of every cut's score by +0.5: the same best cut and the same ties on every input",
    # a scale keeps the argmax; it moves the absolute tie window (1e-12), but two balanced accuracies
    # differ by 0 or by at least 1/(2·P·N), which exceeds 1e-12 unless P·N > 5e11 (~7e5 cases a class)
    (
        "amf/metrics.py",
        'bacc = ((tpr + 1.0 - fpr) / 2.0)[1:]  # drop the "nothing is atypical" point at +inf',
        "arith / -> *", "(tpr + 1.0 - fpr) / 2.0", "((tpr + 1.0 - fpr) * 2.0)"):
        "a scale by 4: same argmax, and no two cuts differ by under 1e-12 below ~7e5 cases of each class",
    (
        "amf/metrics.py",
        'bacc = ((tpr + 1.0 - fpr) / 2.0)[1:]  # drop the "nothing is atypical" point at +inf',
        "constant 2.0 -> 3.0", "2.0", "(3.0)"):
        "a scale by 2/3: same argmax, and no two cuts differ by under 1.5e-12 below ~7e5 cases of each class",
    (
        "amf/predict.py",
        'x = normalize(batch[start : start + batch_size].to(device, non_blocking=True), mean, std, resize_to)',
        "constant True -> False", "True", "(False)"):
        "non_blocking only lets a host-to-GPU copy overlap; the values that arrive are the same on every device",
    (
        "amf/predict.py",
        'batch_size: int = 256,',
        "constant 256 -> 257", "256", "(257)"):
        "the default batch size: in eval mode each page's output is its own, so any batching gives the same numbers "
        "(test_predict_reference checks batches of 3 against 256)",
    (
        "amf/predict.py",
        'std: Sequence[float], tta: str = "dihedral4", batch_size: int = 256,',
        "constant 256 -> 257", "256", "(257)"):
        "the default batch size of predict_view_logits: per-page outputs do not depend on the batching",
    (
        "amf/predict.py",
        'out.append(logits.float().reshape(-1, n, logits.shape[-1]).transpose(0, 1).cpu())',
        "drop unary -", "-1", "(1)"):
        "logits.shape[1] for shape[-1]: one network's logits are 2-D (rows × classes), so both are the class count",
    (
        "training/mixstyle.py",
        'if not self.training or self.p <= 0 or x.shape[0] < 2 or torch.rand(()) > self.p:',
        "compare > -> >=", "torch.rand(()) > self.p", "(torch.rand(()) >= self.p)"):
        "the two differ only when torch.rand draws exactly p, a float32 in [0, 1): probability at most 2^-24 a call",
    (
        "training/mixstyle.py",
        'scores = torch.rand(b, b, device=device).masked_fill(~other, -1.0)',
        "constant 1.0 -> 2.0", "1.0", "(2.0)"):
        "the fill for invalid partners, -1 or -2: either lies below every torch.rand score in [0, 1), so argmax "
        "picks the same valid partner",
    (
        "training/align.py",
        'mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)',
        "constant True -> False", "True", "(False)"):
        "keepdim of a CORAL mean: (C,) or (1, C) broadcast to the same centred rows and the same squared gap",
    (
        "training/align.py",
        'if self.normalize == "standardize" and len(emb) > 1:',
        "compare > -> >=", "len(emb) > 1", "(len(emb) >= 1)"):
        "standardising a batch of one gives NaN, but one sample forms no pair of domains, so no loss reads it: "
        "total and parts are 0 either way",
    (
        "training/align.py",
        'emb = (emb - emb.mean(0, keepdim=True)) / (emb.std(0, keepdim=True) + 1e-5)',
        "arith - -> +", "emb - emb.mean(0, keepdim=True)", "(emb + emb.mean(0, keepdim=True))"):
        "adding the batch mean instead of subtracting it shifts every row by the same 2·mean/std; CORAL, MMD and "
        "the centroid gap depend only on differences between rows, which a common shift leaves alone",
    (
        "training/align.py",
        'emb = (emb - emb.mean(0, keepdim=True)) / (emb.std(0, keepdim=True) + 1e-5)',
        "constant True -> False", "True", "(False)"):
        "keepdim of the standardising mean or std: a (C,) statistic broadcasts over the N×C batch exactly as "
        "(1, C) does, so every standardised row is the same",
    # amf/preprocess.py, found by helper-11 (test/test_preprocess_reference.py kills every other mutant)
    (
        "amf/preprocess.py",
        'elif channels >= 3:  # RGB, RGBA: alpha carries no stain information',
        "compare >= -> >", "channels >= 3", "(channels > 3)"):
        "for exactly 3 channels a[..., :3] is the whole array, so skipping the slice returns the same page",
    (
        "amf/preprocess.py",
        'elif channels >= 3:  # RGB, RGBA: alpha carries no stain information',
        "constant 3 -> 4", "3", "(4)"):
        "the same: a 3-channel page sliced to 3 channels or left alone is the same page; 4+ are still cut to 3",
    (
        "amf/preprocess.py",
        'top = 255 if a.max(initial=0) <= 255 else np.iinfo(a.dtype).max',
        "constant 0 -> 1", "0", "(1)"):
        "max(initial=1) <= 255 exactly when max(initial=0) <= 255, and an empty page is refused before",
    (
        "amf/preprocess.py",
        'return np.ascontiguousarray(np.clip(np.round(a.astype(np.float64) * (255.0 / top)), 0,'
        ' 255).astype(np.uint8))',
        "constant 255 -> 256", "255", "(256)"):
        "the clip's top: a * 255/top never exceeds 255, as top is 255 or the dtype's maximum, at least the page's",
    (
        "amf/preprocess.py",
        'scale = 255.0 if f.max(initial=0.0) <= 1.0 else 1.0',
        "constant 0.0 -> 1.0", "0.0", "(1.0)"):
        "max(initial=1.0) <= 1.0 exactly when max(initial=0.0) <= 1.0, NaN and inf being zeroed before",
    (
        "amf/preprocess.py",
        'if h > size:',
        "compare > -> >=", "h > size", "(h >= size)"):
        "at h == size the centre crop is page[0:size], the whole page",
    (
        "amf/preprocess.py",
        'if w > size:',
        "compare > -> >=", "w > size", "(w >= size)"):
        "at w == size the centre crop is [:, 0:size], the whole page",
    (
        "amf/preprocess.py",
        'if h < size or w < size:',
        "compare < -> <=", "h < size", "(h <= size)"):
        "after the crop h <= size always; at h == w == size the padding adds 0 rows: the same values",
    (
        "amf/preprocess.py",
        'if h < size or w < size:',
        "compare < -> <=", "w < size", "(w <= size)"):
        "after the crop w <= size always; at h == w == size the padding adds 0 columns: the same values",
    (
        "amf/preprocess.py",
        'size = patch.shape[0]',
        "constant 0 -> 1", "0", "(1)"):
        "patch.shape[1] for shape[0]: crop_and_upscale takes square patches only (its contract; fit_to_size's output)",
    (
        "amf/preprocess.py",
        'if not 0 < crop <= size:',
        "compare < -> <=", "0 < crop <= size", "(0 <= crop <= size)"):
        "crop == 0 has returned above (`if not crop`), so 0 never reaches the range check",
    (
        "amf/preprocess.py",
        'if tuple(x.shape[-2:]) == (size, size):',
        "drop unary -", "-2", "(2)"):
        "x.shape[2:] is x.shape[-2:] for the N×3×H×W batch that resize_batch takes",
    (
        "amf/preprocess.py",
        'shrink = size < max(x.shape[-2:])',
        "drop unary -", "-2", "(2)"):
        "x.shape[2:] is x.shape[-2:] for the N×3×H×W batch that resize_batch takes",
    (
        "amf/preprocess.py",
        'shrink = size < max(x.shape[-2:])',
        "compare < -> <=", "size < max(x.shape[-2:])", "(size <= max(x.shape[-2:]))"):
        "antialias on where nothing shrinks: torch uses the same bilinear kernel (measured: within 6e-8, rounding)",
    (
        "amf/preprocess.py",
        'shrink = size < max(x.shape[-2:])',
        "constant 2 -> 3", "2", "(3)"):
        "max over (3, H, W) differs from max over (H, W) only when H, W < 3, which only grow: no antialias either way",
    # training/calibration.py, fit_temperature's search settings: the NLL is unimodal in log T (convex
    # in 1/T), so any grid that brackets its minimum and any shrinking bracket search inside it reach the
    # same temperature (to ~1e-7 relative here, far inside the tests' 2e-5)
    (
        "training/calibration.py",
        'grid = np.exp(np.linspace(*np.log(TEMPERATURE_RANGE), 121))',
        'constant 121 -> 122', '121', '(122)'):
        'a grid of 122 points brackets the same minimum; the search inside finds the same temperature',
    (
        "training/calibration.py",
        'lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, last)])',
        'constant 1 -> 2', '1', '(2)'):
        "a bracket two grid steps wide on either side holds the same single minimum (at the range's edges "
        "the clamps still stop it there)",
    (
        "training/calibration.py",
        'ratio = (math.sqrt(5) - 1) / 2',
        'constant 5 -> 6', '5', '(6)'):
        "(√6 − 1)/2 ≈ 0.72 instead of the golden ratio still shrinks the bracket round the minimum, to "
        "0.72^40 of 0.1 in log T (3e-7)",
    (
        "training/calibration.py",
        'for _ in range(40):',
        'constant 40 -> 41', '40', '(41)'):
        'one more golden-section step only narrows a bracket that is already ~5e-10 wide in log T',
    (
        "training/calibration.py",
        'if nll(y, calibrated_probs(margins, math.exp(a))) <= nll(y, calibrated_probs(margins, math.exp(b))):',
        "compare <= -> <",
        "nll(y, calibrated_probs(margins, math.exp(a))) <= nll(y, calibrated_probs(margins, math.exp(b)))",
        "(nll(y, calibrated_probs(margins, math.exp(a))) < nll(y, calibrated_probs(margins, math.exp(b))))"):
        'which half a tie keeps: two NLLs tie only where the NLL is flat, and either half then holds a minimum',
    # fit_platt's L-BFGS: the strong-Wolfe line search picks the step, so the first trial step and one
    # more iteration end at the same optimum of a smooth convex loss
    (
        "training/calibration.py",
        'optimiser = torch.optim.LBFGS([log_scale, bias], lr=1.0, max_iter=200, tolerance_grad=1e-10,',
        'constant 1.0 -> 2.0', '1.0', '(2.0)'):
        "a first trial step of 2 instead of 1: the line search still settles where the Wolfe conditions "
        "hold, at the same optimum",
    (
        "training/calibration.py",
        'optimiser = torch.optim.LBFGS([log_scale, bias], lr=1.0, max_iter=200, tolerance_grad=1e-10,',
        'constant 200 -> 201', '200', '(201)'):
        'an iteration cap of 201: the fit stops on its tolerances long before 200',
    # fit_platt's loss: log P and log(1 − P) each subtract log(views); adding it instead shifts the loss by a
    # constant (2·log(views) times the share of one class), which moves neither its gradient nor its minimiser
    (
        "training/calibration.py",
        'log_p = torch.logsumexp(torch.nn.functional.logsigmoid(z), dim=1) - log_views',
        'arith - -> +', 'torch.logsumexp(torch.nn.functional.logsigmoid(z), dim=1) - log_views',
        '(torch.logsumexp(torch.nn.functional.logsigmoid(z), dim=1) + log_views)'):
        "the loss shifts by −2·log(views)·mean(y), a constant in the parameters: same gradient, same fit",
    (
        "training/calibration.py",
        'log_q = torch.logsumexp(torch.nn.functional.logsigmoid(-z), dim=1) - log_views',
        'arith - -> +', 'torch.logsumexp(torch.nn.functional.logsigmoid(-z), dim=1) - log_views',
        '(torch.logsumexp(torch.nn.functional.logsigmoid(-z), dim=1) + log_views)'):
        "the loss shifts by −2·log(views)·mean(1 − y), a constant in the parameters: same gradient, same fit",
    # pool_oof: the typing assert after the loop, which fold 0 always satisfies (an empty list is refused)
    (
        "training/ensemble.py",
        'assert n_patches is not None and held is not None  # set by fold 0',
        'bool and -> or', 'n_patches is not None and held is not None',
        '(n_patches is not None or held is not None)'):
        "fold 0 sets both (pool_oof refuses an empty list first), so the two asserts hold alike",
    # build_model_dir / score_held_out / build: member 0 and member 1 agree in all that is read from them
    (
        "training/ensemble.py",
        'card = make_card(loaded[0].model, backbone=arch["backbone"], drop_rate=arch["drop_rate"],',
        'constant 0 -> 1', '0', '(1)'):
        "make_card reads the network's architecture and class order, which every member shares (checked above)",
    (
        "training/ensemble.py",
        'stain=loaded[0].stain)',
        'constant 0 -> 1', '0', '(1)'):
        "every member's stain target is the same (checked above: the members must share stain_norm)",
    (
        "training/ensemble.py",
        'd = load_run_config(runs[0] / "config.yaml").data',
        'constant 0 -> 1', '0', '(1)'):
        "score_held_out reads the data settings, which the folds' config.yaml files share (they differ in "
        "data.fold and run.out only)",
    (
        "training/ensemble.py",
        'labels = weak_labels_of(runs[0], oof)',
        'constant 0 -> 1', '0', '(1)'):
        "weak_labels_of reads the manifests and weak labels, which the folds' configs share",
    (
        "training/ensemble.py",
        'amp=False, positive_index=loaded.positive_index, calibration=loaded.calibration,',
        'constant False -> True', 'False', '(True)'):
        "the held-out scoring loads the members on the CPU (load_model_dir's default), where autocast acts only "
        "with cpu_bf16, which predict_proba never asks for: no input tells the two apart",
    (
        "training/ensemble.py",
        'owned = [o for o in args.overrides if o.split("=", 1)[0] in _OWNED]',
        'constant 1 -> 2', '1', '(2)'):
        "the text before the first '=' is the same whatever the number of further splits",
    # build_model_dir: the members are checked to share what `first` supplies, and K ≥ 2 (main refuses fewer)
    (
        "training/ensemble.py",
        'first = loaded[0].card',
        'constant 0 -> 1', '0', '(1)'):
        "member 1's card as `first`: every member must equal it in what the card takes from it, and the "
        "fold-specific provenance is dropped or replaced",
    (
        "training/ensemble.py",
        'for run, one in zip(runs, loaded, strict=True):',
        'constant True -> False', 'True', '(False)'):
        "zip's strict flag over `runs` and a list built from `runs`: the lengths are always equal",
    (
        "training/ensemble.py",
        'for i, (run, one) in enumerate(zip(runs, loaded, strict=True))]',
        'constant True -> False', 'True', '(False)'):
        "zip's strict flag over `runs` and a list built from `runs`: the lengths are always equal",
    (
        "training/ensemble.py",
        'provenance["config"] = members_config(runs[0], first)',
        'constant 0 -> 1', '0', '(1)'):
        "members_config reads its run only when the card lacks its config, and drops the one setting the "
        "folds' config.yaml files differ in (data.fold)",
}


def equivalent_reason(module: str, record: dict) -> str | None:
    return EQUIVALENT.get((module, record.get("code"), record["operator"], record["original"], record["mutated"]))


_COMPARE_SWAPS: dict[type, list[type]] = {
    ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq],
    ast.Lt: [ast.GtE, ast.LtE], ast.LtE: [ast.Gt, ast.Lt],
    ast.Gt: [ast.LtE, ast.GtE], ast.GtE: [ast.Lt, ast.Gt],
    ast.In: [ast.NotIn], ast.NotIn: [ast.In], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
}
_BINOP_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult,
}
_BOOLOP_SWAPS: dict[type, type] = {ast.And: ast.Or, ast.Or: ast.And}


@dataclass
class Mutant:
    id: str
    module: str
    line: int
    code: str  # the stripped source line where it starts: the key of EQUIVALENT
    operator: str  # what kind of change
    original: str  # the source segment before
    mutated: str  # and after
    start: tuple[int, int]  # (line, byte column), 1-based line
    end: tuple[int, int]


def _op_name(op: ast.AST) -> str:
    return {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@", ast.And: "and",
            ast.Or: "or", ast.USub: "-", ast.Not: "not"}.get(type(op), type(op).__name__)


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes not to mutate: docstrings, annotations, f-strings and everything under them."""
    skip: set[int] = set()

    def under(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            under(body[0])
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            under(node.returns)
            for arg in [*node.args.args, *node.args.posonlyargs, *node.args.kwonlyargs, node.args.vararg,
                        node.args.kwarg]:
                if arg is not None:
                    under(arg.annotation)
        if isinstance(node, ast.AnnAssign):
            under(node.annotation)
        if isinstance(node, ast.JoinedStr):
            under(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            # logging calls change only what is logged
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in {"debug", "info", "warning", "error", "exception"}:
                under(node)
    return skip


def _variants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(operator description, mutated copy of ``node``) for every mutation of this one node."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in _COMPARE_SWAPS.get(type(op), []):
                m = copy.deepcopy(node)
                m.ops[i] = new()
                yield f"compare {_op_name(op)} -> {_op_name(new())}", m
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        if any((isinstance(side, ast.Constant) and isinstance(side.value, str)) or isinstance(side, ast.JoinedStr)
               for side in (node.left, node.right)):
            return  # string concatenation or % formatting: a mutant that only breaks a message
        new = _BINOP_SWAPS[type(node.op)]()
        m = copy.deepcopy(node)
        m.op = new
        yield f"arith {_op_name(node.op)} -> {_op_name(new)}", m
    elif isinstance(node, ast.BoolOp):
        new = _BOOLOP_SWAPS[type(node.op)]()
        m = copy.deepcopy(node)
        m.op = new
        yield f"bool {_op_name(node.op)} -> {_op_name(new)}", m
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
        yield f"drop unary {_op_name(node.op)}", copy.deepcopy(node.operand)
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            yield f"constant {v} -> {not v}", ast.Constant(not v)
        elif isinstance(v, int):
            yield f"constant {v} -> {v + 1}", ast.Constant(v + 1)
        elif isinstance(v, float):
            new_value = v + 1.0 if v != 0 else 1.0
            yield f"constant {v!r} -> {new_value!r}", ast.Constant(new_value)


def _aug_variants(node: ast.AugAssign) -> Iterator[tuple[str, ast.AugAssign]]:
    if type(node.op) in _BINOP_SWAPS:
        new = _BINOP_SWAPS[type(node.op)]()
        m = copy.deepcopy(node)
        m.op = new
        yield f"augassign {_op_name(node.op)}= -> {_op_name(new)}=", m


def _splice(source: bytes, start: tuple[int, int], end: tuple[int, int], text: str) -> bytes:
    """Replace the bytes between (line, col) positions (1-based lines, byte columns, as ast gives them)."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    a = offsets[start[0] - 1] + start[1]
    b = offsets[end[0] - 1] + end[1]
    return source[:a] + text.encode("utf-8") + source[b:]


def mutants_of(module: str, source: bytes) -> list[Mutant]:
    """Every mutant of one module, each a valid Python source change."""
    tree = ast.parse(source)
    skip = _skipped_nodes(tree)
    lines = source.decode("utf-8").splitlines()
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "end_lineno"):
            continue
        variants = _aug_variants(node) if isinstance(node, ast.AugAssign) else _variants(node)
        for operator, new in variants:
            start, end = (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)
            original = ast.get_source_segment(source.decode("utf-8"), node) or ""
            # AugAssign is a statement: no parentheses; an expression keeps its place with them
            text = ast.unparse(new) if isinstance(node, ast.AugAssign) else f"({ast.unparse(new)})"
            mutated_source = _splice(source, start, end, text)
            try:
                compile(mutated_source, module, "exec")
            except SyntaxError:
                continue
            found.append(Mutant(id="", module=module, line=node.lineno, code=lines[node.lineno - 1].strip(),
                                operator=operator,
                                original=" ".join(original.split()), mutated=text, start=start, end=end))
    found.sort(key=lambda m: (m.start, m.end, m.operator))
    for i, m in enumerate(found, 1):
        m.id = f"{module}#{i}"
    return found


# -- running -----------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def scratch_copy(dest: Path, commit: str | None) -> Path:
    """The repository at ``commit`` (or the working tree when None) under ``dest/repo``, with ../shared linked."""
    repo = dest / "repo"
    repo.mkdir(parents=True)
    if commit is None:
        names = _git("ls-files", "-co", "--exclude-standard", "-z").split("\0")
        for name in filter(None, names):
            src = REPO / name
            if src.is_file():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, repo / name)
    else:
        archive = dest / "repo.tar"
        subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit], cwd=REPO, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(repo, filter="data")
        archive.unlink()
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (dest / "shared").symlink_to(shared)
    return repo


def run_tests(repo: Path, tests: list[str], timeout: float, trace: dict[str, str] | None = None) -> dict:
    """``trace``: the line_tests plugin's environment, to record which tests run which lines."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           **(trace or {})}
    env.pop("PYTHONPATH", None)
    plugin = ["-p", "benchmarks.line_tests"] if trace else []
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *plugin, "-o", "addopts=", *tests]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "killed_by": "timeout"}
    seconds = round(time.perf_counter() - t0, 1)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
    if done.returncode == 0:
        return {"status": "survived", "seconds": seconds, "killed_by": None}
    if done.returncode == 1:
        return {"status": "killed", "seconds": seconds, "killed_by": failed[0] if failed else "a failing test"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    # 2 (interrupted: e.g. an import error while collecting) still means the tests noticed
    status = "killed" if done.returncode == 2 else "error"
    return {"status": status, "seconds": seconds, "killed_by": failed[0] if failed else " | ".join(tail)[:300],
            "returncode": done.returncode}


def _run_confirming_timeouts(repo: Path, tests: list[str], timeout: float) -> dict:
    """A timeout counts as a kill (a hang), so it must not come from a busy machine: one that runs out
    of time gets a second run with twice the time, and only a second timeout stands."""
    first = run_tests(repo, tests, timeout)
    if first["status"] != "timeout":
        return first
    second = run_tests(repo, tests, 2 * timeout)
    return {**second, "seconds": round(first["seconds"] + second["seconds"], 1), "retried_after_timeout": True}


def statement_lines(source: bytes) -> dict[int, int]:
    """Line -> first line of the smallest statement holding it: the line a tracer reports when that
    statement runs, even where the mutated expression sits on a continuation line."""
    owner: dict[int, tuple[int, int]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt) and node.end_lineno is not None:
            span = node.end_lineno - node.lineno
            for line in range(node.lineno, node.end_lineno + 1):
                if line not in owner or span < owner[line][1]:
                    owner[line] = (node.lineno, span)
    return {line: first for line, (first, _) in owner.items()}


def tests_running(m: Mutant, traced: dict, stmt_of: dict[int, int]) -> list[str]:
    """The traced tests, in run order, that execute the mutated lines (or the first line of their statement)."""
    lines = set(range(m.start[0], m.end[0] + 1))
    lines |= {stmt_of[line] for line in lines if line in stmt_of}
    return [t for t in traced["tests"] if lines.intersection(traced["lines"].get(t, ()))]


def _record(m: Mutant, **outcome: object) -> dict:
    """A mutant's JSON record: what changed, where (by line; byte offsets stay out), and what happened."""
    record = {**asdict(m), **outcome}
    del record["start"], record["end"]
    return record


def resumable(prev: dict | None, module: str, tests: list[str], commit: str | None) -> list[dict]:
    """The records of an unfinished run of ``module`` that still hold at ``commit``: the module, its
    tests and the shared fixtures are unchanged since, so each mutant meets the same code and tests."""
    if not prev or prev.get("complete") or prev.get("error") or commit is None or prev.get("tests") != tests:
        return []
    old = prev.get("commit", "")
    if old != commit:
        paths = [module, *tests, "test/conftest.py"]
        if subprocess.run(["git", "diff", "--quiet", old, commit, "--", *paths], cwd=REPO).returncode != 0:
            return []
    return [{**r, "measured_at": r.get("measured_at", old)} for r in prev.get("mutants", [])]


def run_module(repo: Path, module: str, tests: list[str], timeout: float | None, limit: int | None,
               progress=None, log=print, earlier: list[dict] | None = None, skip_equivalent: bool = True) -> dict:
    """Baseline, then every mutant (or the first ``limit``); ``progress(result)`` after each one, so an
    interrupted run still leaves what it measured. ``timeout`` None: 3× the baseline, at least 120 s.

    The baseline also records which tests run which lines of the module (``benchmarks/line_tests.py``).
    A mutant first meets only the tests that run its lines: a failure there is a kill. Whatever survives
    them (or has no such test) then runs the module's full test list, as without the selection, so the
    selection changes how long a kill takes, never whether a mutant counts as killed.

    ``earlier``: records of an interrupted run (:func:`resumable`); those mutants are not run again.
    ``skip_equivalent``: a mutant listed in EQUIVALENT is recorded as such without running (a survivor
    costs the whole test list, minutes); the report marks it "not run"."""
    path = repo / module
    original = path.read_bytes()
    mutants = mutants_of(module, original)
    tests = [t for t in tests if (repo / t).is_file()]
    log(f"{module}: {len(mutants)} mutants; tests {', '.join(tests)}")
    trace_out = repo / ".line-tests.json"
    baseline = run_tests(repo, tests, 3600.0, {"AMF_LINE_TESTS_MODULE": str(path),
                                               "AMF_LINE_TESTS_OUT": str(trace_out)})
    log(f"  baseline (traced): {baseline['status']} in {baseline['seconds']} s")
    timeout = timeout or max(120.0, 3.0 * baseline["seconds"])
    keys = {m.id: (m.line, m.operator, m.original, m.mutated) for m in mutants}
    kept = [r for r in earlier or [] if keys.get(r["id"]) == (r["line"], r["operator"], r["original"], r["mutated"])]
    result = {"tests": tests, "baseline": baseline, "timeout_s": timeout, "n_mutants": len(mutants),
              "mutants": kept, "complete": False}
    if kept:
        log(f"  resuming: {len(kept)} mutants measured before")
    if baseline["status"] != "survived":  # the unmutated code must pass its tests first
        result["error"] = "the tests fail on the unmutated code; no mutant was run"
        return result
    traced = json.loads(trace_out.read_text(encoding="utf-8"))
    stmt_of = statement_lines(original)
    done = {r["id"] for r in kept}
    chosen = [m for m in (mutants[:limit] if limit else mutants) if m.id not in done]
    try:
        for i, m in enumerate(chosen, 1):
            if skip_equivalent and equivalent_reason(module, asdict(m)):
                result["mutants"].append(_record(m, status="equivalent", seconds=0.0, killed_by=None, not_run=True))
                log(f"  [{i}/{len(chosen)}] line {m.line} {m.operator}: listed as equivalent, not run")
                continue
            path.write_bytes(_splice(original, m.start, m.end, m.mutated))
            selected = tests_running(m, traced, stmt_of)
            outcome = run_tests(repo, selected, timeout) if selected else {"status": "survived", "seconds": 0.0}
            if outcome["status"] != "killed":  # survived, error (a test id pytest would not take), or timeout
                full = _run_confirming_timeouts(repo, tests, timeout)
                outcome = {**full, "seconds": round(outcome["seconds"] + full["seconds"], 1)}
            result["mutants"].append(_record(m, **outcome, selected_tests=len(selected)))
            result["summary"] = summarize(result["mutants"])
            log(f"  [{i}/{len(chosen)}] line {m.line} {m.operator}: {outcome['status']} ({outcome['seconds']} s, "
                f"{len(selected)} tests run it)" + (f" by {outcome['killed_by']}" if outcome["status"] == "killed"
                                                   else ""))
            if progress is not None:
                progress(result)
    finally:
        path.write_bytes(original)
    result["complete"] = len(result["mutants"]) == len(mutants)
    result["summary"] = summarize(result["mutants"])
    return result


def recheck_module(repo: Path, module: str, result: dict, tests: list[str], commit: str, log=print) -> dict:
    """Run a finished module's survivors again against ``tests`` at ``commit`` (a test added since may
    kill them), only where the module itself is byte for byte what was mutated, so each mutant is the
    same. Kills replace the survivor's record; the recheck is logged in ``result["rechecks"]``."""
    path = repo / module
    original = path.read_bytes()
    if _git("show", f"{result['commit']}:{module}") != original.decode("utf-8").strip():
        raise SystemExit(f"{module} changed since {result['commit']}: its mutants are not the same; run it again")
    by_id = {m.id: m for m in mutants_of(module, original)}
    survivors = [r for r in result["mutants"] if r["status"] == "survived" and not equivalent_reason(module, r)]
    tests = [t for t in tests if (repo / t).is_file()]
    log(f"{module}: rechecking {len(survivors)} survivors of {result['commit']} at {commit}; tests {', '.join(tests)}")
    killed = 0
    try:
        for record in survivors:
            m = by_id[record["id"]]
            assert (m.line, m.operator, m.original, m.mutated) == (record["line"], record["operator"],
                                                                  record["original"], record["mutated"]), m.id
            path.write_bytes(_splice(original, m.start, m.end, m.mutated))
            outcome = _run_confirming_timeouts(repo, tests, result["timeout_s"])
            log(f"  line {m.line} {m.operator}: {outcome['status']} ({outcome['seconds']} s)")
            if outcome["status"] in ("killed", "timeout"):
                killed += 1
                record.update(outcome, rechecked_at=commit)
    finally:
        path.write_bytes(original)
    result.setdefault("rechecks", []).append({"commit": commit, "tests": tests, "survivors": len(survivors),
                                              "killed": killed})
    result["summary"] = summarize(result["mutants"], module)
    return result


def summarize(records: list[dict], module: str | None = None) -> dict:
    """Counts per status; survivors listed in EQUIVALENT count as ``equivalent`` and leave the kill
    rate's denominator (the usual mutation score: killed / (run − equivalent − error))."""
    counts = {s: sum(r["status"] == s for r in records) for s in ("killed", "timeout", "survived", "error")}
    excused = [r["status"] in ("survived", "equivalent") and bool(equivalent_reason(module or r.get("module", ""), r))
               for r in records]
    counts["equivalent"] = sum(excused)
    # not run because listed, and no longer listed: an unverified survivor
    counts["survived"] += sum(r["status"] == "equivalent" for r in records) - counts["equivalent"]
    scored = counts["killed"] + counts["timeout"] + counts["survived"]
    counts["run"] = len(records)
    counts["kill_rate"] = round((counts["killed"] + counts["timeout"]) / scored, 4) if scored else None
    return counts


# -- report ------------------------------------------------------------------------------------------
def write_report(data: dict, path: Path = MD_OUT) -> None:
    lines = ["# Mutation testing", "",
             "Generated by `python -m benchmarks.mutation` from [`mutation.json`](mutation.json); do not edit.", ""]
    pending = [m for m in TARGETS if m not in data["modules"] or not data["modules"][m].get("complete")]
    if pending:
        lines += [f"**PARTIAL RESULT**: no complete run yet for {', '.join(f'`{m}`' for m in pending)}. "
                  "The kill rates below cover only the modules listed with a complete run.", ""]
    lines += ["| module | commit | mutants | run | killed | timeout | survived | equivalent | error | kill rate "
              "| tests |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for module in TARGETS:
        r = data["modules"].get(module)
        if r is None:
            lines.append(f"| `{module}` | – | – | not run | | | | | | | |")
            continue
        s = summarize(r.get("mutants", []), module)
        rate = "–" if s["kill_rate"] is None else f"{s['kill_rate']:.1%}"
        tests = ", ".join(Path(t).name for t in r["tests"])
        commit = r.get("commit", "?") + "".join(f", survivors rechecked at {c['commit']}"
                                                for c in r.get("rechecks", []))
        lines.append(f"| `{module}` | {commit} | {r['n_mutants']} | {s['run']} | {s['killed']} | "
                     f"{s['timeout']} | {s['survived']} | {s['equivalent']} | {s['error']} | {rate} | {tests} |")
    lines += ["", "Kill rate: (killed + timeout) / (run − equivalent − error). A survivor counts as killed only "
              "once a run kills it: the module's run, or `--recheck`, which runs the recorded survivors again "
              "against the tests of a later commit while the module's own code is unchanged.", ""]
    lines.append("")
    for module in TARGETS:
        r = data["modules"].get(module)
        if not r:
            continue
        if r.get("error"):
            lines += [f"`{module}`: {r['error']}", ""]
        survivors = [m for m in r.get("mutants", []) if m["status"] in ("survived", "error", "equivalent")]
        if survivors:
            lines += [f"## Survivors in `{module}`", "", "| line | change | original | mutated | status |",
                      "|---|---|---|---|---|"]
            for m in survivors:
                reason = equivalent_reason(module, m) if m["status"] != "error" else None
                not_run = " (not run)" if m["status"] == "equivalent" else ""
                status = f"equivalent{not_run}: {reason}" if reason else "survived" if not_run else m["status"]
                lines.append(f"| {m['line']} | {m['operator']} | `{_cell(m['original'])}` | `{_cell(m['mutated'])}` | "
                             f"{_cell(status, 300)} |")
            lines.append("")
    env = data.get("environment", {})
    lines += [f"Last run: {data.get('updated', '?')} on {env.get('machine', '?')}, Python {env.get('python', '?')}; "
              "per-mutant times are in the JSON.", ""]
    write_text_atomic(path, "\n".join(lines))


def _cell(text: str, width: int = 90) -> str:
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def store(data: dict, path: Path = JSON_OUT) -> None:
    """The raw JSON and the report generated from it, each written atomically: a run stopped mid-write
    leaves the previous file, and a later run resumes from it."""
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    write_report(data, path.with_suffix(".md"))


def load_results(path: Path = JSON_OUT) -> dict:
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"modules": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--commit", default="HEAD", help="the commit to mutate (default HEAD)")
    parser.add_argument("--worktree", action="store_true", help="mutate the working tree as it is, not a commit")
    parser.add_argument("--timeout", type=float,
                        help="seconds per mutant before it counts as killed (default: 3× the baseline, ≥ 120 s)")
    parser.add_argument("--limit", type=int, help="run only the first N mutants of each module (smoke test)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--report", action="store_true", help="only regenerate mutation.md from mutation.json")
    parser.add_argument("--out", type=Path, default=JSON_OUT)
    parser.add_argument("--run-equivalents", action="store_true",
                        help="run the mutants listed as equivalent too (they are recorded without running otherwise)")
    parser.add_argument("--recheck", action="store_true", help="run only the recorded survivors again, against "
                        "today's tests (the module's own code must be unchanged)")
    parser.add_argument("--tests", nargs="+", help="run these tests instead of the module's TARGETS, to see what a "
                        "new test file kills (needs --out elsewhere: such a run is not the benchmark)")
    args = parser.parse_args(argv)
    if args.tests and args.out.resolve() == JSON_OUT.resolve():
        parser.error("--tests measures other tests than the benchmark's: give --out a file of its own")
    # a plain `kill` still restores the module, kills the running tests and removes the scratch copy
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.report:
        write_report(load_results(args.out), args.out.with_suffix(".md"))
        return 0
    if args.list:
        for module in args.modules:
            for m in mutants_of(module, (REPO / module).read_bytes()):
                print(f"{m.id}\tline {m.line}\t{m.operator}\t{m.original!r} -> {m.mutated!r}")
        return 0

    commit = None if args.worktree else _git("rev-parse", "--short", args.commit)
    label = "working tree" + (f" at {_git('rev-parse', '--short', 'HEAD')}" if args.worktree else "")
    data = load_results(args.out)

    def save(module: str, result: dict, t0: float) -> None:
        """Merge one module's (possibly unfinished) result into the JSON and regenerate the report."""
        result.update(commit=commit or label, seconds=round(time.perf_counter() - t0, 1),
                      finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        data["modules"][module] = result
        data["pending"] = [m for m in TARGETS if m not in data["modules"] or not data["modules"][m].get("complete")]
        data["partial"] = bool(data["pending"])
        data["updated"] = result["finished"]
        data["environment"] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                               "python": platform.python_version(),
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        store(data, args.out)

    with tempfile.TemporaryDirectory(prefix="amf-mutation-") as tmp:
        repo = scratch_copy(Path(tmp), commit)
        if args.recheck:
            for module in args.modules:
                if not data["modules"].get(module, {}).get("complete"):
                    print(f"{module}: no complete run to recheck; skipped")
                    continue
                result = data["modules"][module]
                t0, seconds = time.perf_counter(), result.get("seconds", 0.0)
                recheck_module(repo, module, result, args.tests or TARGETS[module], commit or label)
                result["seconds"] = round(seconds + time.perf_counter() - t0, 1)
                store(data, args.out)
                print(f"{module}: {result['summary']}")
            return 0
        for module in args.modules:
            t0 = time.perf_counter()
            tests = args.tests or TARGETS[module]
            earlier = resumable(data["modules"].get(module), module, tests, commit) if not args.tests else []
            result = run_module(repo, module, tests, args.timeout, args.limit,
                                progress=lambda r, module=module, t0=t0: save(module, r, t0), earlier=earlier,
                                skip_equivalent=not args.run_equivalents)
            save(module, result, t0)
            print(f"{module}: {result.get('summary') or result.get('error')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
