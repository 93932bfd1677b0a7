"""The model card's numbers, generated from the shipped model directory and the raw results behind it.

    python -m benchmarks.model_card                                  # model/ -> benchmarks/results/model_card.md
    python -m benchmarks.model_card --model runs/ensemble/model --out /tmp/card.md

Sources, and nothing typed by hand:

* ``model.json``: architecture, recipe and budget (``provenance.config``), members, calibration,
  threshold, and the metrics it was shipped with (out of fold for an ensemble, validation for one
  network);
* the directory's files: size on disk;
* ``benchmarks/results/ablation-<shipped recipe>/ablation/*.json`` (``--ablation``): leave-one-domain-out
  numbers of one network trained with the shipped recipe (the ablation's Full arm), with the settings
  where its recipe differs from the card's;
* ``benchmarks/results/latency.json``: the cold 16-page job, used only when it measured these very
  weights (same sha256); otherwise the card says it is not measured;
* ``benchmarks/results/ablation-<shipped recipe>/threshold_transfer.json`` (an ensemble only): how the
  members' threshold and calibration carry over to their average on a domain all of them left out
  (the ablation's seed pairs), flagged stale when it fitted another kind of calibration than the card
  ships or its runs trained another recipe.

The README's model card quotes these tables (``python -m benchmarks.readme_sync``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from amf.card import (
    CARD_NAME,
    WEIGHTS_NAME,
    calibration_formula,
    describe_calibration,
    pretrained_words,
    read_card,
    weights_sha256,
)
from benchmarks import lodo_ensemble
from benchmarks.ablation import DOMAINS
from benchmarks.answers import SHIPPED, ablation_results, chosen_held_out, transfer_results
from benchmarks.driver import checkout_relative, load_results
from benchmarks.goals import LODO_TARGET, domain_means, goal_cell, goal_number, target_verdict
from benchmarks.publish import publish
from benchmarks.spread import fmt
from benchmarks.threshold_transfer import row_calibration
from training.config import with_settings_added_later

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
SHIPPED_ARM = "Full"  # the ablation arm that trains the shipped recipe
# Settings that make the recipe; the split, the seed and where things go do not.
_RECIPE_SECTIONS = ("model", "mix", "align", "distil", "optim", "augment")
_RECIPE_DATA_KEYS = ("input_size", "center_crop", "stain_norm", "weak_labels")


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else f"{x:.{digits}f}"


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings that make the recipe (see ``_RECIPE_SECTIONS``). One that the code which
    wrote ``config`` did not have yet reads as the value that changes nothing, which it was added at."""
    config = with_settings_added_later(config)
    chosen = {s: config.get(s, {}) for s in _RECIPE_SECTIONS}
    chosen["data"] = {k: config["data"].get(k) for k in _RECIPE_DATA_KEYS}
    return _flat(chosen)


def recipe_differences(card_config: dict[str, Any], run_config: dict[str, Any]) -> list[str]:
    """``key: card value vs run value`` for every recipe setting both record and set differently (a setting
    added later counts at its neutral value; see ``recipe_settings``)."""
    a, b = recipe_settings(card_config), recipe_settings(run_config)
    return [f"{k} {a[k]!r} vs {b[k]!r}" for k in sorted(a.keys() & b.keys())
            if a[k] != b[k] and a[k] is not None and b[k] is not None]


def _recipe_text(provenance: dict[str, Any]) -> str:
    config, recipe = provenance.get("config") or {}, provenance.get("recipe") or {}
    parts = []
    mix = config.get("mix") or {}
    if recipe.get("mix"):
        stages = (" after " + ", ".join(f"`{s}`" for s in recipe["mix"]) if isinstance(recipe["mix"], list)
                  else " (stages not recorded in this card)")
        extra = f" (p {mix['p']}, α {mix['alpha']}, {mix['mode']})" if {"p", "alpha", "mode"} <= mix.keys() else ""
        parts.append(f"Mix: MixStyle{stages}{extra}")
    else:
        parts.append("Mix: off")
    align = recipe.get("align")
    if isinstance(align, str):  # cards written before the alignment's settings were recorded
        parts.append(f"Align: {align.upper()} (its labels and weight not recorded in this card)")
    elif align:
        acting = ", ".join(align.get("labels") or []) or "none"
        out = align.get("labels_sitting_out") or []
        normalize = align.get("normalize", "none")
        parts.append(f"Align: {align.get('kind', '?').upper()} on the embedding (normalize: {normalize}), "
                     f"weight {align.get('weight', '?')}, acting on {acting}"
                     + (f" ({', '.join(out)} sit out: one known value in the training data)" if out else ""))
    else:
        parts.append("Align: off")
    distil = config.get("distil") or {}
    if recipe.get("distil"):
        extra = (f" (decay {distil['decay']}, T {distil['temperature']}, weight {distil['weight']})"
                 if {"decay", "temperature", "weight"} <= distil.keys() else "")
        parts.append(f"Distil: EMA teacher{extra}")
    else:
        parts.append("Distil: off")
    return "; ".join(parts)


def _augment_text(config: dict[str, Any]) -> str:
    a = config.get("augment") or {}
    if not a:
        return "not recorded in this card"
    parts = ["dihedral flips and rotations" if a.get("dihedral") else "no dihedral views"]
    if a.get("affine_p"):
        parts.append(f"affine p {a['affine_p']} (±{a.get('rotate_deg')}°, scale ±{a.get('scale')}, "
                     f"shift ±{a.get('translate_px')} px)")
    if a.get("hed_p"):
        parts.append(f"HED stain jitter p {a['hed_p']} (σ {a.get('hed_sigma')}, bias ±{a.get('hed_bias')})")
    if a.get("blur_p"):
        parts.append(f"blur p {a['blur_p']}")
    if a.get("noise_p"):
        parts.append(f"noise p {a['noise_p']}")
    return ", ".join(parts)


def _budget_text(config: dict[str, Any]) -> str:
    o = config.get("optim") or {}
    if not o:
        return "not recorded in this card"
    return (f"{o.get('epochs')} epochs, batch {o.get('batch_size')}, AdamW lr {o.get('lr')} (weight decay "
            f"{o.get('weight_decay')}, {o.get('warmup_epochs')} warm-up epochs, cosine decay), {o.get('sampler')} "
            f"sampling, {o.get('loss')} loss")


def _members_data_text(members: list[dict[str, Any]], pool: dict[str, Any]) -> str:
    sizes = [m["trained_on"]["patches"] for m in members if (m.get("trained_on") or {}).get("patches")]
    if len(sizes) < len(members):  # a card from before the members recorded theirs: the pool is fold 0's
        return f"member 0 trained on {pool.get('patches')} patches ({pool.get('atypical')} atypical)"
    each = f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}–{max(sizes)}"
    return (f"{pool.get('patches')} patches ({pool.get('atypical')} atypical) from {pool.get('slides')} slides, "
            f"each member trained on {each} of them")


def summary_table(card: dict[str, Any], model_dir: Path) -> str:
    arch, prov = card["architecture"], card.get("provenance", {})
    members = card.get("members") or []
    per_member = card.get("parameters")
    trainable = prov.get("trainable_parameters")
    net = (f"{arch['backbone']} → {arch.get('attention', 'none')} attention → average pooling → linear head"
           + (f"; {trainable / 1e6:.2f} M trainable parameters per network" if trainable else
              f"; {per_member / max(len(members), 1) / 1e6:.2f} M stored values per network (BatchNorm statistics "
              "included)" if per_member else ""))
    data = prov.get("data", {})
    train = data.get("train", {})
    rows = [("network", net),
            ("members", f"{len(members)}: {data.get('split', '')}" if members else "1"),
            ("recipe", _recipe_text(prov)),
            ("augmentation", _augment_text(prov.get("config") or {})),
            ("budget", _budget_text(prov.get("config") or {})),
            ("pretrained", pretrained_words(str(prov.get("pretrained", "not recorded")), arch["backbone"],
                                            prov.get("backbone"))),
            ("data", f"{', '.join(data.get('manifests', []))}; " + (_members_data_text(members, train) if members else
                     f"{train.get('patches')} training patches ({train.get('atypical')} atypical) from "
                     f"{train.get('slides')} slides, {data.get('split', '')}")),
            ("input", f"{card['input_size']}×{card['input_size']} RGB"
                      + (f", centre {card['center_crop']} px upscaled back" if card.get("center_crop") else "")
                      + (f"; Reinhard stain normalisation per patch onto LAB mean {stain['target_mean']}, std "
                         f"{stain['target_std']}" if (stain := card.get("stain_norm")) else "")
                      + f"; mean {card['mean']}, std {card['std']}"),
            ("output", "P(atypical)" + (" = mean over the members" if members else "")
                       + f" of {calibration_formula(card.get('calibration'))}"
                       + f", TTA {card['tta']}; class atypical when P ≥ **{card['threshold']:.3f}**"),
            ("threshold", card.get("threshold_source", "")),
            ("files", f"{_size_mb(model_dir):.1f} MB ({CARD_NAME} + {WEIGHTS_NAME}, "
                      f"{(card.get('weights') or {}).get('dtype', 'float32')} weights); sha256 "
                      f"{weights_sha256(model_dir, card)[:16]}…")]
    commits = sorted({m.get("git_commit") for m in members if m.get("git_commit")}) or [prov.get("git_commit")]
    dates = sorted(m.get("trained_at") for m in members if m.get("trained_at")) or [prov.get("trained_at")]
    finished = (f"members finished {dates[0]} to {dates[-1]}" if dates[-1] != dates[0] else f"finished {dates[0]}")
    rows.append(("trained", f"code {', '.join(str(c) for c in commits)}; {finished}; torch {prov.get('torch')}"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _size_mb(model_dir: Path) -> float:
    return sum((model_dir / n).stat().st_size for n in (CARD_NAME, WEIGHTS_NAME)) / 1e6


def _metric_row(name: str, m: dict[str, Any]) -> str:
    return (f"| {name} | {m.get('n')} | {m.get('n_atypical')} | {_num(m.get('balanced_accuracy'))} | "
            f"{_num(m.get('sensitivity'))} | {_num(m.get('specificity'))} | {_num(m.get('roc_auc'))} |")


def metrics_table(card: dict[str, Any]) -> str:
    """Out-of-fold (ensemble) or validation (one network) metrics at the shipped threshold."""
    head = ["| scored on | patches | atypical | balanced accuracy | sensitivity | specificity | ROC AUC |",
            "|---|---|---|---|---|---|---|"]
    metrics = card.get("metrics", {})
    if "oof" in metrics:
        oof = metrics["oof"]
        rows = [_metric_row("all, out of fold", oof["overall"])]
        for label, groups in (oof.get("by_label") or {}).items():
            if len(groups) > 1:
                rows += [_metric_row(f"{label}: {name}", m) for name, m in groups.items()]
        rows += [_metric_row(f"fold {k}'s patches", m) for k, m in enumerate(oof.get("per_fold") or [])]
        return "\n".join(head + rows)
    rows = []
    student, teacher = (metrics.get(part, {}).get("val") for part in ("student", "teacher"))
    if student:
        rows.append(_metric_row("validation, student (shipped)", student["overall"]))
    if teacher:
        rows.append(_metric_row(f"validation, EMA teacher (its own threshold {teacher['threshold']:.3f})",
                                teacher["overall"]))
    for label, groups in ((student or {}).get("by_label") or {}).items():
        if len(groups) > 1:
            rows += [_metric_row(f"student, {label}: {name}", m) for name, m in groups.items()]
    return "\n".join(head + rows)


def calibration_table(card: dict[str, Any]) -> str | None:
    """ECE and NLL out of fold before and after the shipped calibration, then each kind's
    cross-fitted score, the one that chose it."""
    oof = card.get("metrics", {}).get("oof")
    if not oof or "ece_before" not in oof:
        return None
    lines = ["| out of fold | ECE (15 bins) | negative log-likelihood |", "|---|---|---|",
             f"| before calibration | {_num(oof['ece_before'], 4)} | {_num(oof.get('nll_before'), 4)} |",
             f"| after ({describe_calibration(card.get('calibration'))}, fitted on these predictions) | "
             f"{_num(oof['ece_after'], 4)} | "
             f"{_num(oof.get('nll_after'), 4)} |"]
    choice = oof.get("calibration_choice") or {}
    if choice.get("cross_fitted"):
        chosen = choice.get("chosen")
        lines += ["", f"Chosen by {choice.get('rule', '?')}:", "",
                  "| calibration | cross-fitted ECE | cross-fitted NLL |", "|---|---|---|"]
        lines += [f"| {'**' + kind + '** (shipped)' if kind == chosen else kind} | {_num(s['ece'], 4)} | "
                  f"{_num(s['nll'], 4)} |" for kind, s in choice["cross_fitted"].items()]
    return "\n".join(lines)


def lodo_table(card: dict[str, Any], records: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """One network with the shipped recipe, each AMi-Br domain held out (mean ± sd over seeds), and
    the recipe settings where those runs differ from the card's (beyond the split and seed)."""
    runs = [r for r in records if r.get("arm") == SHIPPED_ARM]
    if not runs:
        return None, []
    card_config = card.get("provenance", {}).get("config") or {}
    differences = sorted({d for r in runs for d in recipe_differences(card_config, r["config"])}) \
        if card_config else ["the card records no config to compare with"]
    goal = f"goal (BA ≥ {LODO_TARGET['balanced_accuracy']:.2f}, AUC ≥ {LODO_TARGET['roc_auc']:.2f})"
    lines = [f"| held out | balanced accuracy | sensitivity | specificity | ROC AUC | seeds | {goal} |",
             "|---|---|---|---|---|---|---|"]
    per_domain = domain_means(runs)  # seed means of the goal's metrics
    for dom in DOMAINS:
        rs = [r["student"]["test"] for r in runs if r["held_out"] == dom]
        if not rs:
            continue
        cols = {k: [x[k] for x in rs] for k in ("balanced_accuracy", "sensitivity", "specificity", "roc_auc")}
        lines.append(f"| {dom} ({rs[0]['n']} patches) | {fmt(cols['balanced_accuracy'])} | "
                     f"{fmt(cols['sensitivity'])} | {fmt(cols['specificity'])} | {fmt(cols['roc_auc'])} | "
                     f"{len(rs)} | {goal_cell(per_domain[dom])} |")
    if len(per_domain) == len(DOMAINS):
        over = {k: statistics.mean(m[k] for m in per_domain.values()) for k in LODO_TARGET}
        lines.append(f"| mean over domains | {over['balanced_accuracy']:.3f} | | | {over['roc_auc']:.3f} | | |")
    return "\n".join([*lines, "", target_verdict(per_domain, DOMAINS)]), differences


def transfer_section(card: dict[str, Any], transfer: dict[str, Any] | None,
                     shown: str = "threshold_transfer.json") -> list[str]:
    """How the single-member threshold and calibration carry over to a members' average, measured on
    domains that all members left out (the shipped recipe's rows of ``threshold_transfer.json``)."""
    rows = [r for r in (transfer or {}).get("rows", []) if r.get("arm") == SHIPPED_ARM]
    if not rows:
        return [f"Not measured for this recipe yet (`{shown}`): `bash benchmarks/cpu_plan.sh lodo` measures it "
                "once the ablation's two seeds have trained (`python -m benchmarks.threshold_transfer --runs RUNS "
                f"--json {shown}`). The first recipe's check is in `benchmarks/results/threshold_transfer.md`.", ""]
    lines = [f"The ablation's two seeds of the {SHIPPED_ARM} arm, each domain held out, are members that all "
             "left that domain out. Calibration and threshold fitted on their pooled validation predictions (the "
             "seeds' validation splits mostly coincide, so most of those patches are scored twice), the analogue "
             "of this card's fit on its out-of-fold predictions, then applied on the held-out domain "
             f"(`{Path(shown).with_suffix('.md')}`):", "",
             "| held out | calibration | threshold | members alone at that threshold: BA (mean) | average's BA | Δ | "
             "average's BA at the domain's best cut |", "|---|---|---|---|---|---|---|"]
    kinds = set()
    for r in rows:
        calibration = row_calibration(r)
        kinds.add(calibration["kind"] if calibration else "none")
        members = statistics.mean(m["balanced_accuracy"] for m in r["members"])
        average = r["average"]["balanced_accuracy"]
        lines.append(f"| {r['held_out']} | {describe_calibration(calibration)} | {r['threshold']:.3f} | "
                     f"{members:.3f} | {average:.3f} | {average - members:+.3f} | "
                     f"{r['average']['balanced_accuracy_at_best']:.3f} |")
    shipped = (card.get("calibration") or {}).get("kind", "none")
    lines.append("")
    if kinds != {shipped}:
        lines += [f"**Stale:** that check fitted {', '.join(sorted(kinds))}; this card ships {shipped}. Rerun "
                  "`python -m benchmarks.threshold_transfer`.", ""]
    card_config = card.get("provenance", {}).get("config") or {}
    if any("config" not in r for r in rows):
        lines += ["**Another recipe, maybe:** that check did not record which recipe its runs trained (it predates "
                  "the record). Rerun `python -m benchmarks.threshold_transfer --runs` on this recipe's ablation runs.",
                  ""]
    else:
        differences = sorted({d for r in rows for d in recipe_differences(card_config, r["config"])})
        if differences:
            lines += ["**Another recipe:** those runs differ from this card in " + "; ".join(differences)
                      + ". Rerun `python -m benchmarks.threshold_transfer --runs` on this recipe's ablation runs.", ""]
    return lines


def ensemble_held_out_section(card: dict[str, Any], measured: dict[str, dict[str, Any]],
                              records: list[dict[str, Any]], shown: str) -> list[str]:
    """The recipe's 5-fold ensemble trained with each domain left out and scored there as it ships
    (benchmarks.lodo_ensemble), with #10's goal; the recipe settings where those folds differ from the card."""
    if not measured:
        return [f"Not measured yet (`{shown}/`): `bash benchmarks/cpu_plan.sh lodo-ensemble` trains this recipe's "
                "5 folds with each domain left out and scores their ensemble there as it ships.", ""]
    folds = {m["report"].get("folds") for m in measured.values()}
    lines = [f"{' or '.join(str(k) for k in sorted(folds, key=str))} members trained on the folds of the other "
             "domains, threshold and calibration from their out-of-fold predictions, scored on the held-out domain "
             f"as `process.py` scores it (`{shown}.md`):", "",
             "| held out | balanced accuracy | sensitivity | specificity | ROC AUC | members alone, at the ensemble's "
             "threshold: BA (mean) | "
             f"goal (BA ≥ {LODO_TARGET['balanced_accuracy']:.2f}, AUC ≥ {LODO_TARGET['roc_auc']:.2f}) |",
             "|---|---|---|---|---|---|---|"]
    for dom, m in measured.items():
        held = m["report"]["held_out"]
        e = held["ensemble"]
        alone = statistics.mean(x["balanced_accuracy"] for x in held["members"])
        lines.append(f"| {dom} ({held['patches']} patches) | {goal_number(e, 'balanced_accuracy')} | "
                     f"{e['sensitivity']:.3f} | {e['specificity']:.3f} | {goal_number(e, 'roc_auc')} | {alone:.3f} | "
                     f"{goal_cell(e)} |")
    single = domain_means(r for r in records if r.get("arm") == SHIPPED_ARM)
    card_config = card.get("provenance", {}).get("config") or {}
    differences = sorted({d for m in measured.values() for f in m["folds"][:1]
                          for d in recipe_differences(card_config, f["config"])}) if card_config else []
    return [*lines, "", lodo_ensemble.verdict(measured, single), "",
            "Recipe settings where those folds differ from this card: "
            + ("; ".join(differences) if differences else "none") + ".", ""]


def _align_acting(records: list[dict[str, Any]]) -> str:
    """Which weak labels the alignment acted on with each domain held out (one that keeps a single known
    value in the training data sits out), as the runs recorded it; '' when they did not."""
    acting = {r["held_out"]: r["align_labels"] for r in records
              if r.get("arm") == SHIPPED_ARM and r.get("align_labels") is not None}
    if not acting:
        return ""
    return (" With a domain held out, the alignment acts only on the labels that still vary in the training "
            "data: " + "; ".join(f"{d} held out, {', '.join(acting[d]) or 'none'}" for d in DOMAINS if d in acting)
            + ".")


def cost_table(card: dict[str, Any], model_dir: Path, latency: dict[str, Any] | None) -> str:
    sha = weights_sha256(model_dir, card)
    rows = [("size on disk", f"{_size_mb(model_dir):.1f} MB ({CARD_NAME} + {WEIGHTS_NAME}); the container adds the "
                             "float32 `model.onnx` it exports from them for the CPU engine")]
    measured = latency is not None and latency.get("config", {}).get("weights_sha256") == sha
    if measured:
        assert latency is not None
        cold = latency["cold"]["onnx"]
        rows.append((f"cold {latency['config']['n_pages']}-page CPU job (ONNX Runtime, as shipped)",
                     f"median {statistics.median(cold['wall_s']):.2f} s wall, "
                     f"{statistics.median(cold['cpu_s']):.2f} s CPU over {len(cold['wall_s'])} runs, "
                     f"{latency['machine'].get('cpu', '?')}, {latency['config']['available_cpus']} CPUs"))
        base = latency["config"].get("baseline")
        if base and "baseline" in latency["cold"]:
            ratio = statistics.median(cold["wall_s"]) / statistics.median(latency["cold"]["baseline"]["wall_s"])
            rows.append(("against a baseline model", f"{ratio:.2f}× the cold job of `{base['model']}`, "
                                                     f"{base['members']} member(s) with TTA {base['card_tta']}, "
                                                     "paired and interleaved"))
    else:
        rows.append(("cold 16-page CPU job", "not measured for these weights (run `python benchmarks/latency.py`)"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def render(raw: dict[str, Any]) -> str:
    card, model_dir = raw["card"], Path(raw["model_dir"])
    lodo, differences = lodo_table(card, raw["ablation"])
    members = card.get("members") or []
    lines = [f"# Model card: `{raw['model_dir_shown']}`", "",
             f"Generated by `python -m benchmarks.model_card` from `{CARD_NAME}` and the raw results it names; "
             "edit those, not this file.", "", summary_table(card, model_dir), "",
             "## Scores it was shipped with", "",
             ("Out of fold: every patch scored by the one member that did not train on it (single members, not "
              "the ensemble, which trained on every patch with K−1 of its members), at the shipped threshold, which "
              "was fitted on these same predictions (so balanced accuracy, sensitivity and specificity are "
              "optimistic; AUC is not)." if members else
              "Validation split (same domains as training); the threshold was picked on it, so the "
              "threshold-dependent numbers are optimistic."), "", metrics_table(card), ""]
    calibration = calibration_table(card)
    if calibration:
        lines += [calibration, ""]
    lines += ["## Under domain shift: one network, each domain held out", ""]
    if lodo:
        lines += [f"The ablation's {SHIPPED_ARM} arm (`{raw['ablation_shown']}/`): "
                  "one network trained with "
                  "this recipe on the other AMi-Br domains, scored on the held-out one at its in-domain validation "
                  "threshold (mean ± sd over seeds; ¹ one seed).", "",
                  *([chosen, ""] if (chosen := chosen_held_out(card.get("provenance", {}).get("config") or {}))
                    else []), lodo, "",
                  "Recipe settings where those runs differ from this card: "
                  + ("; ".join(differences) if differences else "none") + "." + _align_acting(raw["ablation"]), ""]
    else:
        lines += [f"No leave-one-domain-out run of this recipe's {SHIPPED_ARM} arm is recorded in "
                  f"`{raw['ablation_shown']}/` yet "
                  "(`bash benchmarks/cpu_plan.sh lodo` trains it). Earlier recipes' are in "
                  "`benchmarks/results/ablation.md`.", ""]
    if members:
        lines += ["## Under domain shift: this recipe's ensemble, each domain held out", "",
                  *ensemble_held_out_section(card, raw.get("lodo_ensemble") or {}, raw["ablation"],
                                             raw.get("lodo_ensemble_shown", str(lodo_ensemble.RESULTS)))]
        transfer = transfer_section(card, raw.get("transfer"), raw.get("transfer_shown", "threshold_transfer.json"))
        lines += ["## The members' threshold on their average", "", *transfer]
    lines += ["## Cost", "", cost_table(card, model_dir, raw.get("latency")), ""]
    return "\n".join(lines)


def sources(root: Path) -> dict[str, Path]:
    """What the card of checkout ``root`` is generated from: the shipped model directory, the shipped
    recipe's ablation (where benchmarks/cpu_plan.sh's lodo stage writes it), the latency measurement
    and the threshold-transfer check of that ablation's seed pairs."""
    return {"model_dir": root / "model", "ablation": root / ablation_results(SHIPPED),
            "latency": root / "benchmarks/results/latency.json", "transfer": root / transfer_results(SHIPPED),
            "lodo_ensemble_results": root / lodo_ensemble.RESULTS}


def gather(model_dir: Path, ablation: Path, latency: Path, transfer: Path,
           lodo_ensemble_results: Path | None = None) -> dict[str, Any]:
    held_out = lodo_ensemble_results
    return {"lodo_ensemble": lodo_ensemble.gather(held_out) if held_out and held_out.is_dir() else {},
            "lodo_ensemble_shown": str(checkout_relative(held_out)) if held_out else str(lodo_ensemble.RESULTS),
            "card": read_card(model_dir), "model_dir": str(model_dir),
            "model_dir_shown": str(checkout_relative(model_dir)),
            "ablation": load_results(ablation) if ablation.is_dir() else [],
            "ablation_shown": str(checkout_relative(ablation)),
            "latency": json.loads(latency.read_text()) if latency.is_file() else None,
            "transfer": json.loads(transfer.read_text()) if transfer.is_file() else None,
            "transfer_shown": str(checkout_relative(transfer))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = sources(REPO)
    parser.add_argument("--model", type=Path, default=default["model_dir"])
    parser.add_argument("--ablation", type=Path, default=default["ablation"],
                        help="the raw results of the ablation that trained the shipped recipe")
    parser.add_argument("--latency", type=Path, default=default["latency"])
    parser.add_argument("--transfer", type=Path, default=default["transfer"],
                        help="benchmarks.threshold_transfer's raw result on that ablation's seed pairs")
    parser.add_argument("--lodo-ensemble", type=Path, default=default["lodo_ensemble_results"],
                        help="benchmarks.lodo_ensemble's records: this recipe's ensemble, each domain held out")
    parser.add_argument("--out", type=Path, default=RESULTS / "model_card.md")
    args = parser.parse_args(argv)
    return publish(gather(args.model, args.ablation, args.latency, args.transfer, args.lodo_ensemble), render,
                   args.out)


if __name__ == "__main__":
    sys.exit(main())
