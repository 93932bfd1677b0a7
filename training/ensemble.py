"""A K-fold ensemble: train the K folds of the slide-grouped stratified split, pool their
out-of-fold predictions, fit the calibration and the threshold on them, and ship the K students
as one model directory.

    python -m training.ensemble --config training/configs/default.yaml --folds 5 --out runs/ensemble [overrides...]

Fold k trains into ``<out>/fold-k/`` with ``data.split=kfold data.folds=K data.fold=k`` through
:func:`training.train.train`; its validation split is exactly the held-out fold, and train()
saves the student's logits on it (``val_predictions.npz``). Rerunning the command resumes:
a finished fold is kept (and checked to belong to the same config), an interrupted one resumes
from its checkpoint. Once all folds are done:

* every patch has exactly one out-of-fold prediction, from the one member that never trained on it;
* a calibration is fitted on those pooled out-of-fold logits (negative log-likelihood), so that a
  member's ``confidence`` is a calibrated P(atypical). ``--calibration auto`` (the default) takes,
  of none, a temperature and Platt scaling (scale and bias), the one whose cross-fitted NLL is
  lowest: each fold scored under the fit to the other folds. A temperature cannot move the members'
  prior (class-weighted CE or a balanced sampler trains them as if half were atypical; the data has about
  a fifth), a Platt bias can;
* the decision threshold maximises balanced accuracy on the pooled, calibrated out-of-fold
  probabilities;
* ``<out>/model/`` holds the K members (format 2, fp16 weights); the ensemble averages the members'
  calibrated probabilities. Threshold and calibration were fitted on single members and are
  applied to their average; the card says so.

With ``data.lodo_column=... data.lodo_value=...`` the folds leave that domain out: they partition
the other domains, and the built model directory is scored on the left-out one as it ships, each
member alone beside it (``held_out`` in the report; ``benchmarks/lodo_ensemble.py``).

``<out>/ensemble_report.json`` holds the out-of-fold numbers (BA, AUC, ECE before and after
calibration, per fold and per domain, and each calibration's cross-fitted score) and
``<out>/reliability.png`` the reliability diagram. ``--tta`` picks the shipped test-time views;
the fit uses the same views (refitting for another ``--tta`` retrains nothing).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amf.atomic import write_json_atomic
from amf.card import describe_calibration
from amf.errors import AmfError
from amf.metrics import (
    best_threshold,
    domain_metrics,
    expected_calibration_error,
    scores_at,
    weak_label_metrics,
)
from amf.model_dir import TTA_VIEWS, load_model_dir, make_card, read_card, save_ensemble_dir
from amf.predict import VIEW_COUNTS
from training import plots
from training.calibration import (
    CALIBRATIONS,
    TEMPERATURE_RANGE,
    choose_calibration,
    member_probs,
    nll,
    temperature_at_edge,
)
from training.config import Config, load_config, load_run_config
from training.data import read_rows, summarize
from training.train import VAL_PREDICTIONS, train

log = logging.getLogger("training.ensemble")
FOLD_DIR = "fold-{}"
REPORT = "ensemble_report.json"
_OWNED = ("data.split", "data.folds", "data.fold", "run.out")  # set by this command, per fold


@dataclass
class OutOfFold:
    """Every patch once, scored by the member that did not train on it."""

    index: np.ndarray  # row of the patch set
    fold: np.ndarray  # the member that scored it
    label: np.ndarray
    slide: np.ndarray
    domain: np.ndarray
    logits: np.ndarray  # N×V×classes, views in amf.predict.tta_views order
    views: str
    n_patches: int  # rows of the patch set the folds were made on
    held_out: np.ndarray  # rows no member saw: a domain the folds left out, or none

    def margins(self, tta: str) -> np.ndarray:
        """logit(atypical) − logit(normal) for the first views of ``tta`` (N×V')."""
        if VIEW_COUNTS[tta] > self.logits.shape[1]:
            raise AmfError(f"the folds saved {self.views} views; {tta} needs more (retrain with run.tta={tta})")
        return (self.logits[:, : VIEW_COUNTS[tta], 1] - self.logits[:, : VIEW_COUNTS[tta], 0]).astype(np.float64)


def fold_config(config: Path | None, overrides: list[str], folds: int, fold: int, out: Path) -> Config:
    return load_config(config, [*overrides, "data.split=kfold", f"data.folds={folds}", f"data.fold={fold}",
                                f"run.out={out / FOLD_DIR.format(fold)}"])


def fold_done(run: Path) -> bool:
    return all((run / name).is_file() for name in ("summary.json", "model/model.json", VAL_PREDICTIONS))


def train_folds(config: Path | None, overrides: list[str], folds: int, out: Path) -> list[Path]:
    """Train what is missing, fold by fold; a finished fold must come from the same config."""
    runs = []
    for k in range(folds):
        cfg = fold_config(config, overrides, folds, k, out)
        run = Path(cfg.run.out)
        runs.append(run)
        if fold_done(run):
            digest = read_card(run / "model")["provenance"].get("config_digest")
            if digest != cfg.digest():
                raise AmfError(f"{run} was trained with another config ({digest}, this one is {cfg.digest()}); "
                               "use another --out or remove that fold")
            log.info("fold %d of %d: done, kept (%s)", k, folds, run)
            continue
        log.info("fold %d of %d: training into %s", k, folds, run)
        train(cfg)
        _setup_logging(out)  # train() took the logging over for its own run
    return runs


def pool_oof(runs: list[Path]) -> OutOfFold:
    """The folds' validation predictions pooled, refusing anything that is not out of fold."""
    if not runs:
        raise AmfError("no folds to pool")
    parts = []
    n_patches, views, held = None, None, None
    for k, run in enumerate(runs):
        path = run / VAL_PREDICTIONS
        if not path.is_file():
            raise AmfError(f"{path} is missing: fold {k} has not finished")
        with np.load(path, allow_pickle=False) as z:
            part = {name: z[name] for name in z.files}
        part.setdefault("test_index", np.zeros(0, np.int64))  # written since folds could leave a domain out
        overlap = np.intersect1d(part["index"], np.concatenate([part["train_index"], part["test_index"]]))
        if len(overlap):
            raise AmfError(f"{path}: {len(overlap)} validation patches were also training or held-out patches of "
                           f"fold {k}; its predictions are not out of fold")
        if n_patches is not None and (int(part["n_patches"]) != n_patches or str(part["views"]) != views):
            raise AmfError(f"{path} was made on other data or views than fold 0")
        if held is not None and not np.array_equal(np.sort(part["test_index"]), held):
            raise AmfError(f"{path} left out other patches than fold 0; the folds must leave out the same domain")
        n_patches, views, held = int(part["n_patches"]), str(part["views"]), np.sort(part["test_index"])
        parts.append(part)
    index = np.concatenate([p["index"] for p in parts])
    if len(np.unique(index)) != len(index):
        raise AmfError("a patch is in the validation split of two folds: the folds are not one partition")
    assert n_patches is not None and held is not None  # set by fold 0
    if len(index) + len(held) != n_patches:
        left_out = f" and the {len(held)} left out" if len(held) else ""
        raise AmfError(f"the folds' validation splits hold {len(index)}{left_out} of {n_patches} patches, "
                       "not all of them")
    return OutOfFold(index=index, fold=np.concatenate([np.full(len(p["index"]), k) for k, p in enumerate(parts)]),
                     label=np.concatenate([p["label"] for p in parts]),
                     slide=np.concatenate([p["slide"] for p in parts]),
                     domain=np.concatenate([p["domain"] for p in parts]),
                     logits=np.concatenate([p["logits"] for p in parts]), views=str(views),
                     n_patches=n_patches, held_out=held)


def fit_oof(oof: OutOfFold, tta: str, calibration: str = "auto",
            weak_labels: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Calibration, threshold and out-of-fold metrics for the shipped views ``tta``; ``calibration``
    is a kind of :data:`CALIBRATIONS` or ``auto``, which takes the one with the lowest cross-fitted NLL.
    ``weak_labels`` (one value per out-of-fold prediction, as :func:`weak_labels_of` gives them) add a
    breakdown by each (empty: "unknown")."""
    m, y = oof.margins(tta), oof.label
    fitted, choice = choose_calibration(m, y, oof.fold, calibration)
    before, after = member_probs(m, None), member_probs(m, fitted)
    threshold = best_threshold(y, after)
    pooled = domain_metrics(y, after, oof.domain, threshold)
    per_fold = [domain_metrics(y[oof.fold == k], after[oof.fold == k], None, threshold)["overall"]
                for k in range(int(oof.fold.max()) + 1)]
    return {
        "tta": tta,
        "calibration": fitted,
        "calibration_choice": choice,
        "threshold": threshold,
        "probs_before": before,
        "probs_after": after,
        "nll_before": nll(y, before),
        "nll_after": nll(y, after),
        "ece_before": expected_calibration_error(y, before),
        "ece_after": expected_calibration_error(y, after),
        "overall": pooled["overall"],
        "per_domain": pooled.get("per_domain", {}),
        "per_fold": per_fold,
        "by_label": weak_label_metrics(y, after, weak_labels or {}, threshold),
    }


def _public(fit: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fit.items() if not k.startswith("probs_")}


def weak_labels_of(run: Path, oof: OutOfFold) -> dict[str, np.ndarray]:
    """The weak labels of every out-of-fold prediction, in ``oof``'s order, read back from the manifests
    (no image is decoded); nothing, with a warning, when the manifests no longer match the folds' data."""
    config = members_config(run, read_card(run / "model"))
    if config is None:
        return {}
    data = config["data"]
    try:
        _, labels, _, meta = read_rows(data["manifests"], data["image_dirs"], data["weak_labels"])
    except (AmfError, OSError) as err:
        log.warning("no out-of-fold breakdown by weak label: %s", err)
        return {}
    labels_now = np.asarray(labels)
    if oof.index.max() >= len(labels_now) or not np.array_equal(labels_now[oof.index], oof.label):
        log.warning("no out-of-fold breakdown by weak label: the manifests changed since the folds were trained")
        return {}
    return {name: np.asarray(values)[oof.index] for name, values in meta.items()}


def members_config(run: Path, card: dict[str, Any]) -> dict[str, Any] | None:
    """The settings the members share: fold 0's record without its fold number. A fold trained by
    code older than that record has it back from its run's config.yaml."""
    config = card["provenance"].get("config")
    if config is None and (run / "config.yaml").is_file():
        config = load_run_config(run / "config.yaml").weights_settings()
    if config is None:
        return None
    return {**config, "data": {k: v for k, v in config["data"].items() if k != "fold"}}


def build_model_dir(out: Path, runs: list[Path], fit: dict[str, Any], pool: dict[str, Any]) -> Path:
    """The K members as one format-2 model directory with the out-of-fold threshold and calibration;
    ``pool`` counts the patches the folds partition, which every member but one trained on."""
    loaded = [load_model_dir(run / "model") for run in runs]
    first = loaded[0].card
    arch = first["architecture"]
    for run, one in zip(runs, loaded, strict=True):
        for key in ("architecture", "input_size", "mean", "std"):
            if one.card[key] != first[key]:
                raise AmfError(f"{run}/model differs from fold 0 in {key}; the members must share it")
        for key in ("center_crop", "stain_norm"):  # absent and off alike
            if (one.card.get(key) or 0) != (first.get(key) or 0):
                raise AmfError(f"{run}/model differs from fold 0 in {key}; the members must share it")
    k = len(runs)
    member_cards = [{"fold": i, "of": k, "run": str(run), "threshold_alone": one.card["threshold"],
                     "trained_on": {key: one.card["provenance"].get("data", {}).get("train", {}).get(key)
                                    for key in ("patches", "atypical", "slides")},
                     "metrics_alone": one.card.get("metrics", {}).get("student", {}),
                     "config_digest": one.card["provenance"].get("config_digest"),
                     "git_commit": one.card["provenance"].get("git_commit"),
                     "trained_at": one.card["provenance"].get("trained_at")}
                    for i, (run, one) in enumerate(zip(runs, loaded, strict=True))]
    provenance = {key: value for key, value in first["provenance"].items()
                  if key not in ("config_digest", "git_commit", "git_dirty", "trained_at")}
    provenance["config"] = members_config(runs[0], first)
    # fold 0's training counts would describe one member only
    data = (provenance["config"] or {}).get("data", {})
    outside = f" of the patches outside {data['lodo_column']} {data['lodo_value']!r}" if data.get("lodo_value") else ""
    provenance["data"] = {**first["provenance"].get("data", {}), "train": pool,
                          "split": f"{k} slide-grouped stratified folds{outside}; member k trained on every fold but k"}
    provenance["ensemble_built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    after = ", after calibration" if fit["calibration"] else ""
    source = ("maximises balanced accuracy on the pooled out-of-fold predictions (each patch scored by the one "
              f"member that did not train on it{after}, TTA {fit['tta']}); "
              "fitted on single members and applied to the members' average")
    card = make_card(loaded[0].model, backbone=arch["backbone"], drop_rate=arch["drop_rate"],
                     input_size=first["input_size"], center_crop=first.get("center_crop") or 0,
                     threshold=fit["threshold"], threshold_source=source, tta=fit["tta"], provenance=provenance,
                     metrics={"oof": {key: fit[key] for key in ("overall", "per_domain", "per_fold", "by_label",
                                                                  "ece_before", "ece_after", "nll_before",
                                                                  "nll_after", "calibration_choice")}},
                     mean=tuple(first["mean"]), std=tuple(first["std"]),
                     backbone_kwargs=arch.get("backbone_kwargs"), resize_to=first.get("resize_to"),
                     stain=loaded[0].stain)
    card["ensemble"] = ("P(atypical) is the mean of the members' calibrated probabilities (over the TTA views too); "
                        "threshold and calibration were fitted on single members' out-of-fold predictions and are "
                        "applied to that average (how far that carries over, measured where all members left a "
                        "domain out: threshold_transfer.md beside the recipe's ablation in benchmarks/results/)")
    calibration = None
    if fit["calibration"]:
        calibration = {**fit["calibration"],
                       "fitted_on": "pooled out-of-fold logits of single members (negative log-likelihood), "
                                    f"{fit['tta']} views",
                       "chosen_by": fit["calibration_choice"]["rule"] if fit["calibration_choice"]["asked"] == "auto"
                       else "asked for",
                       "applies_to": "each member's logits before the softmax; the members' probabilities are then "
                                     "averaged",
                       "oof_ece_before": fit["ece_before"], "oof_ece_after": fit["ece_after"]}
    return save_ensemble_dir(out / "model", [one.model for one in loaded], card, member_cards, calibration)


def score_held_out(runs: list[Path], model_dir: Path, oof: OutOfFold, fit: dict[str, Any]) -> dict[str, Any] | None:
    """The built ensemble, as it ships (one batched forward, calibrated average, out-of-fold threshold),
    and each member alone at that threshold, on the domain every fold left out; None without one."""
    if not len(oof.held_out):
        return None
    from amf.predict import predict_proba
    from training.data import read_patch_set

    d = load_run_config(runs[0] / "config.yaml").data
    loaded = load_model_dir(model_dir)
    data = read_patch_set(d, loaded.stain)
    if len(data) != oof.n_patches:
        raise AmfError(f"the manifests hold {len(data)} patches now, the folds were trained on {oof.n_patches}")
    pages, y = data.images[oof.held_out], data.labels[oof.held_out]

    def probs(model: Any) -> np.ndarray:
        return predict_proba(model, pages, mean=loaded.card["mean"], std=loaded.card["std"], tta=fit["tta"],
                             amp=False, positive_index=loaded.positive_index, calibration=loaded.calibration,
                             resize_to=loaded.resize_to)

    members = [scores_at(y, probs(load_model_dir(run / "model").model), fit["threshold"]) for run in runs]
    return {"column": d.lodo_column, "value": d.lodo_value, "patches": len(y), "atypical": int(y.sum()),
            "threshold": fit["threshold"], "tta": fit["tta"],
            "ensemble": scores_at(y, probs(loaded.model), fit["threshold"]), "members": members,
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def build(out: Path, runs: list[Path], tta: str, calibration: str = "auto") -> dict[str, Any]:
    """Pool, fit, plot, report and write the model directory; the report comes back. Folds that left a
    domain out (``data.split=kfold`` with ``data.lodo_value``) have the ensemble scored there as well."""
    oof = pool_oof(runs)
    labels = weak_labels_of(runs[0], oof)
    fit = fit_oof(oof, tta, calibration, labels)
    pool = summarize(oof.label, oof.slide, labels)
    model_dir = build_model_dir(out, runs, fit, pool)
    plots.reliability_plot({"before calibration": (oof.label, fit["probs_before"]),
                            f"after ({describe_calibration(fit['calibration'])})": (oof.label, fit["probs_after"])},
                           out / "reliability.png", f"out-of-fold P(atypical), {len(runs)} folds, {tta} views")
    held_out = score_held_out(runs, model_dir, oof, fit)
    note = "out-of-fold scores of single members; " + (
        "the ensemble's own score is on the domain every fold left out (held_out)" if held_out else
        "the ensemble itself has no held-out score here, since every patch trained K-1 of its members")
    report = {"folds": len(runs), "runs": [str(r) for r in runs], "model_dir": str(model_dir),
              "patches": len(oof.label), "atypical": int(oof.label.sum()), "views_saved": oof.views,
              **_public(fit), **({"held_out": held_out} if held_out else {}), "note": note}
    write_json_atomic(out / REPORT, report, nan_as_null=True)
    t = (fit["calibration"] or {}).get("temperature")
    if t is not None and temperature_at_edge(t):
        log.warning("the temperature %.3g sits at the edge of the search range (%g..%g): the members barely "
                    "separate the classes out of fold", t, *TEMPERATURE_RANGE)
    o = fit["overall"]
    log.info("out of fold (%d patches, %s views): BA %.4f AUC %.4f at threshold %.4f; %s; ECE %.4f -> %.4f",
             len(oof.label), tta, o["balanced_accuracy"], o["roc_auc"], fit["threshold"],
             describe_calibration(fit["calibration"]), fit["ece_before"], fit["ece_after"])
    if held_out:
        e = held_out["ensemble"]
        log.info("held out (%s = %s, %d patches): the ensemble BA %.4f AUC %.4f at that threshold; its members "
                 "alone BA %.4f on average", held_out["column"], held_out["value"], held_out["patches"],
                 e["balanced_accuracy"], e["roc_auc"],
                 float(np.mean([m["balanced_accuracy"] for m in held_out["members"]])))
    log.info("ensemble of %d members written to %s", len(runs), model_dir)
    return report


def _setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "ensemble.log")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "default.yaml")
    parser.add_argument("--folds", type=int, default=5, help="K, the folds and members (default 5)")
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble"), help="fold runs and model/ go here")
    parser.add_argument("--tta", choices=TTA_VIEWS, default="none",
                        help="views the ensemble ships with; threshold and calibration are fitted for them "
                             "(default none: K members already cost K forwards; see benchmarks/tta_oof.py)")
    parser.add_argument("--calibration", choices=("auto", *CALIBRATIONS), default="auto",
                        help="how each member's P(atypical) is calibrated out of fold (default auto: the kind with "
                             "the lowest cross-fitted NLL)")
    parser.add_argument("--no-calibration", dest="calibration", action="store_const", const="none",
                        help="same as --calibration none")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every fold, e.g. optim.epochs=15")
    args = parser.parse_intermixed_args(argv)  # options and overrides in any order
    try:
        owned = [o for o in args.overrides if o.split("=", 1)[0] in _OWNED]
        if owned:
            raise ValueError(f"{', '.join(owned)}: this command sets the split, the fold and run.out itself "
                             "(use --folds and --out)")
        if args.folds < 2:
            raise ValueError("--folds must be at least 2")
        _setup_logging(args.out)
        runs = train_folds(args.config, args.overrides, args.folds, args.out)
        build(args.out, runs, args.tta, args.calibration)
    except (AmfError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (finished folds are kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
