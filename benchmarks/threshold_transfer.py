"""How far a threshold and calibration fitted on single members carry over to their average, on a
domain none of them has seen.

    python -m benchmarks.threshold_transfer --runs runs/ablation          # the ablation's seed pairs
    python -m benchmarks.threshold_transfer --table-only                  # regenerate the table
    python -m benchmarks.threshold_transfer --runs runs/ablation-<recipe> \
        --json benchmarks/results/ablation-<recipe>/threshold_transfer.json --commit   # the CPU queue's lodo stage

``training.ensemble`` fits the calibration and the threshold on out-of-fold predictions, each made
by one member, and ships them for the members' average. Averaging pulls probabilities towards
the middle, so a cut that suits one member need not suit the average. The shipped K-fold ensemble
has no data that all its members left out, so this checks the same rule where such data exists (and
``benchmarks.lodo_ensemble`` trains the K folds themselves with a domain left out, hours a domain): the
ablation trains each recipe twice (two seeds, hence two different slide-grouped validation
splits) on the same leave-one-domain-out training domains. For each held-out domain and arm:

* each member scores its own validation split (which it never trained on), and the pooled
  predictions fit one calibration (its kind chosen by cross-fitting over the members' splits) and one
  threshold, exactly as ``training.ensemble.fit_oof`` does;
* on the held-out domain, balanced accuracy at that threshold is measured for each member and for
  the average of the members' calibrated probabilities;
* the best threshold on the held-out domain is reported as a ceiling for both, so the table shows
  how much of the loss comes from averaging and how much from the domain shift every single model
  meets anyway. It is looked at, never used: nothing is picked from it.

Writes ``benchmarks/results/threshold_transfer.json`` (raw; another recipe's beside its ablation,
``benchmarks.answers.transfer_results``) and the generated table beside it (``.md``). With ``--commit``
it commits both (and the card and README tables they feed), does nothing when the raw file already
holds the same seed pairs, and otherwise measures only the pairs the raw file lacks (each row records
the code and date that measured it), so the queue can call it after every pass. Without ``--commit``
every pair is measured afresh.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from amf.metrics import best_threshold, scores_at  # noqa: E402
from amf.provenance import git_state, machine  # noqa: E402
from benchmarks.driver import checkout_relative, commit_files  # noqa: E402
from benchmarks.publish import publish  # noqa: E402

RAW = REPO / "benchmarks/results/threshold_transfer.json"
_PER_SEED = ("run.seed", "run.out")  # what may differ between the members of one pair


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def group_runs(runs: Path) -> dict[tuple[str, str], list[Path]]:
    """Finished ablation runs that differ only in their seed, keyed by (arm, held-out domain)."""
    import yaml

    from benchmarks.ablation import ARMS, DOMAINS, run_name
    from training.config import with_settings_added_later

    groups: dict[tuple[str, str], list[Path]] = {}
    for arm in ARMS:
        for dom in DOMAINS:
            members = [runs / run_name(arm, dom, s) for s in range(10)]
            members = [m for m in members if (m / "summary.json").is_file() and (m / "model/model.json").is_file()]
            if len(members) < 2:
                continue
            # a setting added between the two seeds' runs reads as the value it was added at, which changes nothing
            flats = [_flat(with_settings_added_later(yaml.safe_load((m / "config.yaml").read_text()) or {}))
                     for m in members]
            for m, f in zip(members[1:], flats[1:], strict=True):
                differ = sorted(k for k in set(f) | set(flats[0]) if k not in _PER_SEED and f.get(k) != flats[0].get(k))
                if differ:
                    raise SystemExit(f"{m} and {members[0]} differ in more than the seed: {', '.join(differ)}")
            groups[(arm, dom)] = members
    return groups


def member_margins(run: Path, tta: str, cache: dict[str, Any]) -> dict[str, np.ndarray]:
    """logit(atypical) − logit(normal) (N×views) of the run's student on its validation split and
    on the held-out domain, with the labels."""
    from amf.model_dir import load_model_dir
    from amf.predict import predict_view_logits
    from training.config import load_run_config
    from training.data import read_patch_set, split_of

    cfg = load_run_config(run / "config.yaml")
    d = cfg.data
    loaded = load_model_dir(run / "model")
    # the model's own stain target: the patches as its training run saw them
    key = repr((d.manifests, d.image_dirs, d.weak_labels, d.input_size, d.center_crop, d.stain_norm, loaded.stain))
    if key not in cache:
        cache[key] = read_patch_set(d, loaded.stain)
    data = cache[key]
    split = split_of(data, d, cfg.run.seed)
    out: dict[str, np.ndarray] = {}
    for part, idx in (("val", split.val), ("test", split.test)):
        logits = predict_view_logits(loaded.model, data.images[idx], mean=loaded.card["mean"],
                                     std=loaded.card["std"], tta=tta, amp=False, resize_to=loaded.resize_to)
        out[f"{part}_margins"] = (logits[..., 1] - logits[..., 0]).astype(np.float64)
        out[f"{part}_labels"] = data.labels[idx]
        out[f"{part}_index"] = idx
    return out


def transfer(members: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The shipped rule on ``members``' margins: fit on their pooled validation predictions, apply to
    each member and to their average on the held-out domain."""
    from training.calibration import choose_calibration, member_probs

    val_m = np.concatenate([m["val_margins"] for m in members])
    val_y = np.concatenate([m["val_labels"] for m in members])
    member_of = np.concatenate([np.full(len(m["val_labels"]), k) for k, m in enumerate(members)])
    calibration, choice = choose_calibration(val_m, val_y, member_of)
    threshold = best_threshold(val_y, member_probs(val_m, calibration))
    test_y = members[0]["test_labels"]
    for m in members[1:]:
        if not np.array_equal(m["test_index"], members[0]["test_index"]):
            raise ValueError("the members' held-out domains are not the same patches")
    probs = [member_probs(m["test_margins"], calibration) for m in members]
    return {
        "calibration": calibration,
        "calibration_choice": choice["cross_fitted"],
        "threshold": threshold,
        "val_patches": [len(m["val_labels"]) for m in members],
        "test_patches": len(test_y),
        "test_atypical": int(test_y.sum()),
        "members": [scores_at(test_y, p, threshold) for p in probs],
        "average": scores_at(test_y, np.mean(probs, axis=0), threshold),
    }


def measure(runs: Path, tta: str, log=print, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every seed pair in ``runs``; a pair that ``measured`` (an earlier raw file, same views) holds
    keeps its row, so a queue that calls this after each pair lands measures only the new ones. Each
    row records the code and date that measured it."""
    import torch
    import yaml

    from amf.provenance import available_cpus

    torch.set_num_threads(max(1, min(2, available_cpus())))
    groups = group_runs(runs)
    if not groups:
        raise SystemExit(f"no arm in {runs} has two finished seeds on one held-out domain")
    code, date = git_state(REPO), _now()
    earlier = {} if not measured or measured.get("tta") != tta else {
        _pair(r): {"code": measured.get("code", {}), "date": measured.get("date", "?"), **r} for r in measured["rows"]}
    cache: dict[str, Any] = {}
    rows = []
    for (arm, dom), members in groups.items():
        row = earlier.get((arm, dom, tuple(m.name for m in members)))
        if row is not None:
            rows.append(row)
            log(f"{arm} / {dom}: measured before ({row['date']})")
            continue
        t0 = time.perf_counter()
        result = transfer([member_margins(m, tta, cache) for m in members])
        config = yaml.safe_load((members[0] / "config.yaml").read_text())  # the members differ in the seed only
        rows.append({"arm": arm, "held_out": dom, "runs": [m.name for m in members], "config": config,
                     "code": code, "date": date, **result})
        log(f"{arm} / {dom}: {len(members)} members, {time.perf_counter() - t0:.0f} s")
    return {"tta": tta, "rows": rows, "runs": str(checkout_relative(runs)), "code": code,
            "machine": machine(), "date": date}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _pair(row: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    return row["arm"], row["held_out"], tuple(row["runs"])


def pairs(groups: dict[tuple[str, str], list[Path]]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(arm, dom, tuple(m.name for m in members)) for (arm, dom), members in groups.items()}


def measured_pairs(raw: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {_pair(r) for r in raw["rows"]}


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def row_calibration(row: dict[str, Any]) -> dict[str, Any] | None:
    """A row's fitted calibration; rows written before other kinds were tried hold a temperature."""
    if "calibration" in row:
        return row["calibration"]
    return {"kind": "temperature", "temperature": row["temperature"]}


def _calibration(row: dict[str, Any]) -> str:
    from amf.card import describe_calibration

    return describe_calibration(row_calibration(row))


def table(raw: dict[str, Any], source: Path = RAW) -> str:
    """The generated table of ``raw``, read from ``source`` (named in the header's command)."""
    lines = [
        "# Does a single member's threshold carry over to the average?",
        "",
        f"Generated by `python -m benchmarks.threshold_transfer --table-only --json {checkout_relative(source)}` "
        f"from `{source.name}`; do not edit.",
        "",
        "Members: the ablation's runs of one arm that differ only in their seed, trained on the same",
        "domains. Their slide-grouped validation splits mostly coincide (the split's seed only breaks ties",
        "between slides of equal size and atypical count), so most validation patches are scored by both.",
        "Calibration and threshold are fitted on the members' pooled validation predictions, as",
        "`training.ensemble` fits them on out-of-fold predictions (where each patch has one). The columns are on the",
        f"held-out domain, views `{raw['tta']}`. *Best* is the threshold that would have been best",
        "there: a ceiling to read the loss against, not a choice.",
        "",
        "| arm | held out | members | calibration | threshold | members' BA (mean) | average's BA | Δ "
        "| members' BA at best | average's BA at best | members' AUC | average's AUC "
        "| predicted atypical: members / average / true |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in raw["rows"]:
        mem, avg = r["members"], r["average"]
        ba_m = _mean([m["balanced_accuracy"] for m in mem])
        lines.append(
            f"| {r['arm']} | {r['held_out']} | {len(mem)} | {_calibration(r)} | {r['threshold']:.3f} | {ba_m:.3f} | "
            f"{avg['balanced_accuracy']:.3f} | {avg['balanced_accuracy'] - ba_m:+.3f} | "
            f"{_mean([m['balanced_accuracy_at_best'] for m in mem]):.3f} | {avg['balanced_accuracy_at_best']:.3f} | "
            f"{_mean([m['roc_auc'] for m in mem]):.3f} | {avg['roc_auc']:.3f} | "
            f"{_mean([m['predicted_atypical'] for m in mem]):.2f} / {avg['predicted_atypical']:.2f} / "
            f"{r['test_atypical'] / r['test_patches']:.2f} |")
    gaps_avg = [r["average"]["balanced_accuracy_at_best"] - r["average"]["balanced_accuracy"] for r in raw["rows"]]
    gaps_mem = [_mean([m["balanced_accuracy_at_best"] - m["balanced_accuracy"] for m in r["members"]])
                for r in raw["rows"]]
    deltas = [r["average"]["balanced_accuracy"] - _mean([m["balanced_accuracy"] for m in r["members"]])
              for r in raw["rows"]]
    lines += [
        "",
        f"**In short.** Over {len(deltas)} pairs, the average at the members' threshold scores "
        f"{_mean(deltas):+.3f} balanced accuracy against its members (range {min(deltas):+.3f} to "
        f"{max(deltas):+.3f}). The threshold falls short of the held-out domain's best cut by "
        f"{_mean(gaps_avg):.3f} for the average and {_mean(gaps_mem):.3f} for a single member: "
        f"{_averaging_effect(_mean(gaps_avg) - _mean(gaps_mem))}.",
        "",
        f"Code {_codes(raw)}, {raw['date']}" + (f"; runs in `{raw['runs']}`." if raw.get("runs") else "."),
        "",
    ]
    return "\n".join(lines)


def _codes(raw: dict[str, Any]) -> str:
    """The commits that measured the rows (a row from before per-row provenance has the file's)."""
    def words(code: dict[str, Any]) -> str:
        return f"{code.get('commit', '?')}{' (dirty)' if code.get('dirty') else ''}"

    return ", ".join(dict.fromkeys(words(r.get("code") or raw["code"]) for r in raw["rows"])) or words(raw["code"])


def _averaging_effect(extra_loss: float) -> str:
    if abs(extra_loss) < 0.001:
        return "averaging leaves that loss as it is (within 0.001)"
    return f"averaging makes that loss {abs(extra_loss):.3f} {'larger' if extra_loss > 0 else 'smaller'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs/ablation", help="the ablation's run folders")
    parser.add_argument("--tta", default="none", help="test-time views (the ablation's runs chose none)")
    parser.add_argument("--json", type=Path, default=RAW)
    parser.add_argument("--out", type=Path, help="the generated table (default: --json's, ending .md)")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--commit", action="store_true",
                        help="commit the raw file and table; skip when the raw file holds the same seed pairs, "
                             "and measure only the pairs it lacks")
    parser.add_argument("--dry-run", action="store_true", help="print the seed pairs found, measure nothing")
    args = parser.parse_args(argv)
    out = args.out or args.json.with_suffix(".md")
    render = functools.partial(table, source=args.json)
    if args.table_only:
        return publish(json.loads(args.json.read_text(encoding="utf-8")), render, out)
    groups = group_runs(args.runs) if args.runs.is_dir() else {}
    found = pairs(groups)
    incremental = args.dry_run or args.commit  # by hand, without either, every pair is measured afresh
    earlier = json.loads(args.json.read_text(encoding="utf-8")) if incremental and args.json.is_file() else None
    if incremental:
        done = earlier is not None and measured_pairs(earlier) == found
        if args.dry_run or done or not found:
            state = (("measured" if done else "to measure") if found
                     else "nothing to measure: no arm has two finished seeds")
            print(f"threshold transfer of {args.runs}: {state} ({len(found)} seed pairs) -> {args.json}")
            return 0
    code = publish(measure(args.runs, args.tta, measured=earlier), render, out, args.json)
    if code == 0 and args.commit:
        commit_files([args.json, out], f"threshold transfer of {args.runs.name}: {len(found)} seed pairs")
    return code


if __name__ == "__main__":
    sys.exit(main())
