"""Train the Mix, Align, Distil recipe and write a self-describing model directory.

    python -m training.train --config training/configs/default.yaml run.out=runs/my-run optim.epochs=8

Multi-GPU (or multi-process CPU with gloo):

    torchrun --nproc_per_node 2 -m training.train --config training/configs/default.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from amf.atomic import nan_to_null, write_atomic, write_json_atomic
from amf.backbones import resolve_backbone
from amf.errors import AmfError
from amf.metrics import best_threshold, domain_metrics, weak_label_metrics
from amf.model_dir import make_card, save_model_dir
from amf.network import create_model
from amf.predict import predict_proba, predict_view_logits
from amf.preprocess import ModelInput
from amf.provenance import git_state
from training import plots
from training.config import Config, load_config, save_config
from training.data import (
    BatchSampler,
    PatchSet,
    Split,
    apply_stain_target,
    fit_stain_target,
    read_patch_set,
    split_of,
)
from training.pretrained import load_pretrained
from training.recipe import MixAlignDistil

log = logging.getLogger("training")


def _setup_logging(out: Path, rank: int) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / "train.log"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def _init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device(device_name)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # CPU runs are bit-for-bit repeatable; on CUDA a few kernels may still differ run to run.
    torch.use_deterministic_algorithms(True, warn_only=True)


def _batch(data: PatchSet, idx: np.ndarray, sites: np.ndarray) -> dict[str, Any]:
    return {
        "images": torch.from_numpy(data.images[idx]),
        "labels": torch.from_numpy(data.labels[idx]),
        "sites": torch.from_numpy(sites[idx]),
        "weak_labels": {k: torch.from_numpy(v[idx]) for k, v in data.codes.items()},
    }


def _scores(model: torch.nn.Module, data: PatchSet, idx: np.ndarray, cfg: Config, tta: str,
            inputs: ModelInput | None = None) -> np.ndarray:
    """``inputs``: the network's normalisation and input side (``MixAlignDistil.inputs``); default ImageNet, as is."""
    return predict_proba(model, data.images[idx], **(inputs or ModelInput()).kwargs(), tta=tta, amp=cfg.run.amp)


def _metrics(data: PatchSet, idx: np.ndarray, probs: np.ndarray, threshold: float, cfg: Config) -> dict[str, Any]:
    """The organizer's metrics overall and per tumour domain, plus a breakdown by every weak label."""
    y = data.labels[idx]
    column = cfg.run.eval_domain_column
    result = domain_metrics(y, probs, data.meta[column][idx] if column in data.meta else None, threshold)
    result["by_label"] = weak_label_metrics(y, probs, {k: v[idx] for k, v in data.meta.items()}, threshold)
    return result


def evaluate(model: torch.nn.Module, data: PatchSet, idx: np.ndarray, cfg: Config, tta: str,
             threshold: float, inputs: ModelInput | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """P(atypical) and :func:`_metrics` at ``threshold``."""
    probs = _scores(model, data, idx, cfg, tta, inputs)
    return probs, _metrics(data, idx, probs, threshold, cfg)


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    o = metrics["overall"]
    return {f"{prefix}/{k}": float(o[k]) for k in ("balanced_accuracy", "roc_auc", "sensitivity", "specificity")}


def varying_labels(data: PatchSet) -> list[str]:
    """Weak labels with at least two known values: a label with one value cannot be aligned across."""
    return [k for k, codes in data.codes.items() if len(set(codes[codes >= 0].tolist())) >= 2]


def _train_epoch(cfg: Config, algo: MixAlignDistil, train_set: PatchSet, sampler: BatchSampler, sites: np.ndarray,
                 epoch: int, world: int, metrics_path: Path | None) -> dict[str, Any]:
    """One epoch; every step's loss terms go to ``metrics.jsonl``, and the epoch's means come back."""
    t0 = time.perf_counter()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    batches = sampler.epoch(epoch)
    # Bars on a terminal only: a redirected log gets the one line per epoch that train() writes.
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batch", leave=False,
               disable=metrics_path is None or not cfg.run.progress or not sys.stderr.isatty())
    steps = []
    for idx in bar:
        losses = algo.update(_batch(train_set, idx, sites))
        steps.append({"kind": "step", "epoch": epoch + 1, "step": algo.step, **losses})
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1  # gradient probes run on some steps only
        bar.set_postfix(loss=f"{losses['loss']:.3f}")
    if metrics_path is not None:
        with open(metrics_path, "a") as fh:
            fh.writelines(json.dumps(nan_to_null(r)) + "\n" for r in steps)
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": algo.step, "seconds": round(seconds, 1),
                           "images_per_s": round(len(batches) * cfg.optim.batch_size * world / seconds, 1)}
    row.update({f"train/{k}": v / counts[k] for k, v in sums.items()})
    return row


def _save_checkpoint(path: Path, algo: MixAlignDistil, epoch: int, cfg: Config) -> None:
    state = {"algorithm": algo.state_dict(), "epoch": epoch, "config": cfg.to_dict(), "digest": cfg.digest(),
             "torch_rng": torch.get_rng_state()}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def train(cfg: Config) -> dict[str, Any]:
    out = Path(cfg.run.out)
    rank, world, device = _init_distributed(cfg.run.device)
    _setup_logging(out, rank)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    _seed_everything(cfg.run.seed)
    if rank == 0:
        save_config(cfg, out / "config.yaml")
    code = git_state()  # at the start: the code that trains, not whatever HEAD is at the end
    log.info("run %s on %s (world %d), config %s, code %s%s", out, device, world, cfg.digest(), code["commit"],
             " (dirty tree)" if code["dirty"] else "")
    data, split = _load_data(cfg)
    train_set = data.subset(split.train)
    sites = train_set.site_codes()
    sampler = BatchSampler(train_set.labels, cfg.optim.batch_size, cfg.optim.sampler, cfg.run.seed, rank, world)
    if len(sampler) == 0:
        raise AmfError(f"{len(train_set)} training patches make no batch of {cfg.optim.batch_size} "
                       f"on {world} process(es); lower optim.batch_size")
    algo, pretrained_source, align_labels = _build_algorithm(cfg, train_set, device, len(sampler), world)
    ckpt_path = out / "checkpoint.pt"
    start_epoch = _resume(cfg, algo, ckpt_path, device) if cfg.run.resume and ckpt_path.is_file() else 0

    metrics_path = out / "metrics.jsonl"
    for epoch in range(start_epoch, cfg.optim.epochs):
        row = _train_epoch(cfg, algo, train_set, sampler, sites, epoch, world, metrics_path if rank == 0 else None)
        if rank == 0:
            row.update(_validate(cfg, algo, data, split))
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(nan_to_null(row)) + "\n")
            _save_checkpoint(ckpt_path, algo, epoch, cfg)
            log.info("epoch %d: %s", epoch + 1, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in row.items() if k != "kind"))

    summary: dict[str, Any] = {}
    if rank == 0:
        summary = _finish(cfg, data, split, algo, out, pretrained_source, code, align_labels)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _load_data(cfg: Config) -> tuple[PatchSet, Split]:
    d = cfg.data
    data = read_patch_set(d)
    split = split_of(data, d, cfg.run.seed)
    if d.stain_norm != "none":
        # From every patch but the held-out test ones: the K folds of one ensemble share one target.
        target = fit_stain_target(data, np.concatenate([split.train, split.val]))
        apply_stain_target(data, target)
        log.info("stain normalisation (%s) onto LAB mean %s, std %s", d.stain_norm, target.mean, target.std)
    log.info("data: %s", json.dumps(data.summary()))
    log.info("split: %s -> train %d, val %d, test %d", split.description, len(split.train), len(split.val),
             len(split.test))
    return data, split


def _build_algorithm(cfg: Config, train_set: PatchSet, device: torch.device, steps_per_epoch: int, world: int
                     ) -> tuple[MixAlignDistil, str, list[str]]:
    """The network (pretrained), the recipe around it, and a log of what acts."""
    spec = resolve_backbone(cfg.model.backbone, cfg.model.backbone_kwargs)  # a registry name -> timm arch + kwargs
    model = create_model(spec.architecture, attention=cfg.model.attention, drop_rate=cfg.model.drop_rate,
                         drop_path_rate=cfg.model.drop_path_rate, backbone_kwargs=spec.kwargs)
    pretrained_source = load_pretrained(model, spec.architecture, cfg.model.pretrained, spec)
    align_labels = varying_labels(train_set)
    algo = MixAlignDistil(cfg, model, device, steps_per_epoch, np.bincount(train_set.labels, minlength=2).tolist(),
                          ddp=world > 1, align_labels=align_labels)
    if cfg.align.enabled:
        idle = sorted(set(cfg.align.label_weights) - set(algo.align.weights)) if algo.align else []
        log.info("align acts on %s; %s sit out (one known value in the training data)",
                 ", ".join(algo.align.weights) or "no label", ", ".join(idle) or "none")
    log.info("recipe: mix=%s align=%s distil=%s", algo.mixers or "off",
             algo.align or "off", f"EMA {cfg.distil.decay}, T={cfg.distil.temperature}" if algo.teacher else "off")
    counts = algo.parameter_counts
    log.info("network: %s%s, input %d px%s; %d of %d parameters train%s", spec.architecture,
             f" ({spec.name})" if spec.name != spec.architecture else "", cfg.data.input_size,
             f" resized to {algo.inputs.resize_to}" if algo.inputs.resize_to else "", counts["trainable_parameters"],
             counts["total_parameters"], f" (LoRA r={cfg.model.lora.rank})" if algo.lora else "")
    return algo, pretrained_source, align_labels


def _resume(cfg: Config, algo: MixAlignDistil, ckpt_path: Path, device: torch.device) -> int:
    """Load the checkpoint of this same config; the epoch to start from."""
    state = torch.load(ckpt_path, map_location=device, weights_only=True)
    if state["digest"] != cfg.digest():
        raise AmfError(f"{ckpt_path} belongs to another config ({state['digest']}); "
                       "use another run.out or run.resume=false")
    algo.load_state_dict(state["algorithm"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resumed from %s at epoch %d", ckpt_path, state["epoch"] + 1)
    return state["epoch"] + 1


def _validate(cfg: Config, algo: MixAlignDistil, data: PatchSet, split: Split) -> dict[str, float]:
    """Per-epoch validation of student and teacher, no TTA, BA at 0.5 (the curve; the threshold comes at the end)."""
    if not len(split.val):
        return {}
    row = _flat("val/student", evaluate(algo.student, data, split.val, cfg, "none", 0.5, algo.inputs)[1])
    if algo.teacher is not None:
        row.update(_flat("val/teacher", evaluate(algo.teacher.module, data, split.val, cfg, "none", 0.5,
                                                 algo.inputs)[1]))
    return row


def _finish(cfg: Config, data: PatchSet, split: Split, algo: MixAlignDistil, out: Path,
            pretrained_source: str, code: dict[str, Any], align_labels: list[str]) -> dict[str, Any]:
    """Pick thresholds on validation, score val and test, write the model directory, plots and summary."""
    models = {"student": algo.student}
    if algo.teacher is not None:
        models["teacher"] = algo.teacher.module
    results, curves = _score_final(cfg, data, split, models, algo.inputs)
    student = copy.deepcopy(algo.shipped_student()).cpu()
    if len(split.val):
        save_val_predictions(out / VAL_PREDICTIONS, cfg, data, split, algo.student, algo.inputs)
    spec = resolve_backbone(cfg.model.backbone, cfg.model.backbone_kwargs)
    provenance = {
        "data": {"manifests": cfg.data.manifests, "split": split.description,
                 "train": data.subset(split.train).summary()},
        "recipe": {"mix": cfg.mix.enabled and cfg.mix.stages,
                   "align": cfg.align.enabled and {"kind": cfg.align.kind, "normalize": cfg.align.normalize,
                                                   "weight": cfg.align.weight, "labels": list(algo.align.weights)
                                                   if algo.align else [],
                                                   "labels_sitting_out": sorted(set(cfg.align.label_weights)
                                                                                - set(align_labels))},
                   "distil": cfg.distil.enabled},
        "pretrained": pretrained_source,
        **({"backbone": {"name": spec.name, "weights": spec.weights, "licence": spec.licence}}
           if spec.registered else {}),
        **({"lora": algo.lora_report} if algo.lora_report else {}),
        "trainable_parameters": algo.parameter_counts["trainable_parameters"],
        "config": cfg.weights_settings(),
        "config_digest": cfg.digest(),
        "git_commit": code["commit"],
        "git_dirty": code["dirty"],
        "torch": torch.__version__,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card = make_card(student, backbone=spec.architecture, backbone_kwargs=spec.kwargs, drop_rate=cfg.model.drop_rate,
                     input_size=cfg.data.input_size, center_crop=cfg.data.center_crop, stain=data.stain_target,
                     mean=algo.inputs.mean, std=algo.inputs.std, resize_to=algo.inputs.resize_to,
                     threshold=results["student"]["threshold"],
                     threshold_source="maximises balanced accuracy on the validation split" if len(split.val)
                     else "default", tta=cfg.run.tta, provenance=provenance,
                     metrics={name: {k: v for k, v in r.items() if k != "threshold"} | {"threshold": r["threshold"]}
                              for name, r in results.items()})
    save_model_dir(out / "model", student, card)
    _plot_run(out, results, curves, cfg.run.tta)
    summary = {"out": str(out), "model_dir": str(out / "model"), "results": results}
    write_json_atomic(out / "summary.json", summary, nan_as_null=True)
    log.info("model directory written to %s", out / "model")
    return summary


VAL_PREDICTIONS = "val_predictions.npz"


def save_val_predictions(path: Path, cfg: Config, data: PatchSet, split: Split, model: torch.nn.Module,
                         inputs: ModelInput | None = None) -> None:
    """The shipped student's raw logits on every validation patch and dihedral view, with what
    identifies the patches: with ``data.split=kfold`` these are the fold's out-of-fold predictions,
    which ``training.ensemble`` pools across folds to fit the threshold and the calibration."""
    views = "dihedral8" if cfg.run.tta == "dihedral8" else "dihedral4"
    logits = predict_view_logits(model, data.images[split.val], **(inputs or ModelInput()).kwargs(), tta=views,
                                 amp=cfg.run.amp)
    column = cfg.run.eval_domain_column
    arrays = {
        "index": split.val.astype(np.int64),  # rows of the patch set (manifests in order)
        "train_index": split.train.astype(np.int64),
        "test_index": split.test.astype(np.int64),  # a domain the folds leave out (kfold with lodo_value)
        "n_patches": np.int64(len(data)),
        "label": data.labels[split.val].astype(np.int64),
        "slide": data.slides[split.val].astype(str),
        "domain": (data.meta[column][split.val] if column in data.meta else np.full(len(split.val), "")).astype(str),
        "logits": logits.astype(np.float32),  # N×V×classes, views in amf.predict.tta_views order
        "views": np.array(views),
        "p_none": torch.softmax(torch.from_numpy(logits[:, 0]), dim=1)[:, 1].numpy().astype(np.float64),
        "split": np.array(split.description),
        "config_digest": np.array(cfg.digest()),
    }

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: given a name, numpy appends ".npz"
            np.savez(fh, **arrays)

    write_atomic(path, save)


def _score_final(cfg: Config, data: PatchSet, split: Split, models: dict[str, torch.nn.Module],
                 inputs: ModelInput | None = None
                 ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray, float]]]:
    """Each model's validation threshold and its metrics on val and test, with the TTA that ships."""
    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for name, model in models.items():
        results[name] = {}
        threshold = 0.5
        if len(split.val):
            val_probs = _scores(model, data, split.val, cfg, cfg.run.tta, inputs)
            threshold = best_threshold(data.labels[split.val], val_probs)
            results[name]["val"] = _metrics(data, split.val, val_probs, threshold, cfg)
            curves[f"val {name}"] = (data.labels[split.val], val_probs, threshold)
        if len(split.test):
            test_probs, test_metrics = evaluate(model, data, split.test, cfg, cfg.run.tta, threshold, inputs)
            results[name]["test"] = test_metrics
            curves[f"test {name}"] = (data.labels[split.test], test_probs, threshold)
        results[name]["threshold"] = threshold
        for part in ("val", "test"):
            if part in results[name]:
                o = results[name][part]["overall"]
                log.info("%s %s @%.3f: BA %.4f AUC %.4f sens %.4f spec %.4f (n=%d)", name, part, threshold,
                         o["balanced_accuracy"], o["roc_auc"], o["sensitivity"], o["specificity"], o["n"])
    return results, curves


def _plot_run(out: Path, results: dict[str, Any], curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
              tta: str) -> None:
    if (out / "metrics.jsonl").is_file():
        plots.training_curves(out / "metrics.jsonl", out / "training_curves.png")
    if not curves:
        return
    plots.roc_plot(curves, out / "roc.png", f"ROC ({tta} TTA); dot = threshold")
    bars: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        for part in ("val", "test"):
            if part in r:
                bars[f"{part} {name}"] = {"all": r[part]["overall"]}
                # a label that takes one value on this split would only repeat "all"
                bars.update({f"{part} {name} {label}": per for label, per in r[part]["by_label"].items()
                             if len(per) > 1})
    plots.domain_bars(bars, out / "domains.png", "per domain (threshold from validation)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "default.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.epochs=4 mix.enabled=false")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg)
    except (AmfError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
