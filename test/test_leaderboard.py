"""pack -> run -> evaluate on generated data, with a stand-in algorithm written here."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from amf.errors import AmfError, InputError
from amf.metrics import domain_metrics
from amf.organizer import OUTPUT_FILENAME, SLUG, to_entries
from leaderboard import (
    DOMAIN_NAMES_FILE,
    GROUND_TRUTH,
    METRICS,
    RUN,
    SAMPLE_DPI,
    JobsFailed,
    NotScorable,
    OutputsRejected,
    evaluate,
    main,
    pack,
    run,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared/data/midog25-t2-sample/input/images" / SLUG / "stack_5.tiff"  # beside the repo
BASH = shutil.which("bash") or "bash"  # found now: the tests below narrow PATH to a folder of stand-ins
SCANNERS = {"A": (30, 8), "B": (20, 5), "": (14, 4)}  # scanner -> (cases, atypical); "" = metadata missing

# Reads its stack like a real job and writes P(atypical) from the mean brightness. FAIL_JOB makes one job
# crash and BAD_JOB makes one write integer confidences, so failures can be provoked per job.
FAKE_ALGORITHM = """
import json, os, sys, pathlib, tifffile
inp, out, job = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
if os.environ.get("FAIL_JOB") == job:
    print("Traceback: simulated crash in " + job, file=sys.stderr)
    sys.exit(3)
stack = next((inp / "images" / "stacked-histopathology-roi-cropouts").glob("*.tif*"))
with tifffile.TiffFile(stack) as tif:
    p = [float(page.asarray().mean() / 255.0) for page in tif.pages]
entries = [{"class": "atypical" if q >= 0.5 else "normal", "confidence": q} for q in p]
if os.environ.get("BAD_JOB") == job:
    entries = [{"class": e["class"], "confidence": 1} for e in entries]
(out / "multiple-mitotic-figure-classification.json").write_text(json.dumps(entries))
"""


def brightness(label: int, rng: np.random.Generator) -> np.ndarray:
    """A patch whose mean is higher for atypical cases, overlapping enough to make errors."""
    mean = rng.normal(150 if label else 110, 18)
    return np.clip(rng.normal(mean, 25, (24, 24, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A tiny manifest in the MIDOG25 columns, with PNG patches in <dir>/images."""
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    columns = ["image_id", "filename", "coordinateX", "coordinateY", "Tumor", "Scanner", "Origin", "Species",
               "expert1", "expert2", "expert3", "majority"]
    rows = []
    for scanner, (n, n_atypical) in SCANNERS.items():
        for i in range(n):
            label = int(i < n_atypical)
            image_id = f"{scanner or 'none'}_{i}.png"
            Image.fromarray(brightness(label, rng)).save(root / "images" / image_id)
            tag = "AMF" if label else "NMF"
            rows.append([image_id, "x.tiff", 1, 1, "human breast cancer", scanner, "lab", "Human", tag, tag, "", tag])
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([columns, *rows])
    return root / "manifest.csv"


@pytest.fixture
def algorithm(tmp_path: Path) -> str:
    script = tmp_path / "fake_algorithm.py"
    script.write_text(FAKE_ALGORITHM)
    return f"{{python}} {script} {{input}} {{output}} {{job}}"


def quiet(*args: object, **kwargs: object) -> None:
    pass


def packed(dataset: Path, out: Path, **kwargs: object) -> Path:
    pack([dataset], out, domain_column="Scanner", stack_size=8, log=quiet, **kwargs)
    return out


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def test_pack_writes_organizer_layout(dataset: Path, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    truth = read_json(out / GROUND_TRUTH)
    assert sum(len(t["labels"]) for t in truth) == 64
    assert all(set(t) == {"image", "labels", "tumordomains"} for t in truth)
    assert all(len(t["labels"]) == len(t["tumordomains"]) <= 8 for t in truth)
    assert {v for t in truth for v in t["labels"]} == {"normal", "atypical"}
    domain_names = read_json(out / DOMAIN_NAMES_FILE)
    assert domain_names["domains"] == {"1": "A", "2": "B", "3": "unknown"} and domain_names["unknown"] == 3
    first = truth[0]["image"]
    job = out / "jobs" / first.removesuffix(".tiff") / "input"
    inputs = read_json(job / "inputs.json")
    assert inputs[0]["image"]["name"] == first and inputs[0]["interface"]["slug"] == SLUG
    with tifffile.TiffFile(job / "images" / SLUG / first) as tif:
        assert not tif.is_bigtiff and tif.byteorder == "<"
        assert len(tif.pages) == len(truth[0]["labels"])
        page = tif.pages[0]
        assert page.compression == 8 and page.photometric == 2 and page.shape == (24, 24, 3)
        assert page.tags["XResolution"].value == (SAMPLE_DPI[0], 1)
        assert page.tags["YResolution"].value == (SAMPLE_DPI[1], 1)
        assert page.tags["ResolutionUnit"].value == 2
        pixels = page.asarray()
    source = read_json(out / "pack.json")["jobs"][0]["pages"][0]["image_id"]
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(dataset.parent / "images" / source)))


@pytest.mark.skipif(not SAMPLE.is_file(), reason="organizer sample stack not available")
def test_stack_tags_match_the_organizers_sample(dataset: Path, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    ours = next((out / "jobs").glob(f"*/input/images/{SLUG}/*.tiff"))
    with tifffile.TiffFile(SAMPLE) as theirs, tifffile.TiffFile(ours) as mine:
        a, b = theirs.pages[0], mine.pages[0]
        assert set(a.tags.keys()) == set(b.tags.keys())
        for name in ("Compression", "PhotometricInterpretation", "PlanarConfiguration", "ResolutionUnit",
                     "XResolution", "YResolution", "BitsPerSample", "SamplesPerPixel"):
            assert a.tags[name].value == b.tags[name].value, name
        assert theirs.byteorder == mine.byteorder and theirs.is_bigtiff == mine.is_bigtiff


def test_pack_is_deterministic_for_a_seed(dataset: Path, tmp_path: Path) -> None:
    a, b = packed(dataset, tmp_path / "a", seed=3), packed(dataset, tmp_path / "b", seed=3)
    c = packed(dataset, tmp_path / "c", seed=4)
    assert (a / GROUND_TRUTH).read_bytes() == (b / GROUND_TRUTH).read_bytes()
    tiffs = sorted(p.relative_to(a) for p in a.glob("jobs/*/input/images/*/*.tiff"))
    assert tiffs and all((a / p).read_bytes() == (b / p).read_bytes() for p in tiffs)
    pages = lambda d: [p["image_id"] for j in read_json(d / "pack.json")["jobs"] for p in j["pages"]]  # noqa: E731
    assert pages(a) == pages(b) != pages(c)


def test_every_stack_mixes_classes_and_keeps_one_domain(dataset: Path, tmp_path: Path) -> None:
    truth = read_json(packed(dataset, tmp_path / "lb") / GROUND_TRUTH)
    # every domain has at least as many atypical cases as stacks, so every stack can hold both
    assert all(set(t["labels"]) == {"normal", "atypical"} for t in truth)
    assert all(len(set(t["tumordomains"])) == 1 for t in truth)


def test_where_filters_and_refuses_to_overwrite(dataset: Path, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb", where=["Scanner=B"])
    truth = read_json(out / GROUND_TRUTH)
    assert sum(len(t["labels"]) for t in truth) == 20
    assert read_json(out / DOMAIN_NAMES_FILE)["domains"] == {"1": "B"}
    with pytest.raises(InputError, match="--force"):
        packed(dataset, out, where=["Scanner=A"])
    empty = packed(dataset, tmp_path / "unknown", where=["Scanner="])
    assert read_json(empty / DOMAIN_NAMES_FILE)["domains"] == {"1": "unknown"}
    with pytest.raises(InputError, match="no case passes"):
        packed(dataset, tmp_path / "none", where=["Scanner=Z"])
    with pytest.raises(InputError, match="no column 'Colour'"):
        packed(dataset, tmp_path / "bad", where=["Colour=red"])


def test_limit_keeps_proportions(dataset: Path, tmp_path: Path) -> None:
    summary = pack([dataset], tmp_path / "lb", domain_column="Scanner", limit=32, log=quiet)
    assert summary["n_cases"] == 32
    assert summary["n_atypical"] == pytest.approx(32 * 17 / 64, abs=1)
    assert [d["cases"] for d in summary["per_domain"].values()] == pytest.approx([15, 10, 7], abs=1)


def organizer_reference(truth: list[dict], outputs: dict[str, list[dict]]) -> dict[str, float]:
    """The organizer's arithmetic, restated here with scikit-learn: pooled counts overall, recall_score
    per domain, AUC on the confidence, which the output contract defines as P(atypical)."""
    ids = {"normal": 0, "atypical": 1}
    gt, pred, score, dom = [], [], [], []
    for t in truth:
        out = outputs[t["image"]]
        gt += [ids[v] for v in t["labels"]]
        dom += t["tumordomains"]
        pred += [ids[e["class"]] for e in out]
        score += [e["confidence"] for e in out]
    gt, pred, score, dom = map(np.array, (gt, pred, score, dom))
    tp, fn = np.sum((pred == 1) & (gt == 1)), np.sum((pred == 0) & (gt == 1))
    tn, fp = np.sum((pred == 0) & (gt == 0)), np.sum((pred == 1) & (gt == 0))
    ref = {"overall_sensitivity": tp / (tp + fn), "overall_specificity": tn / (tn + fp),
           "overall_roc_auc": roc_auc_score(gt, score), "overall_accuracy": (tp + tn) / len(gt)}
    ref["overall_balanced_accuracy"] = (ref["overall_sensitivity"] + ref["overall_specificity"]) / 2
    for d in np.unique(dom):
        m = dom == d
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            sens, spec = recall_score(gt[m], pred[m]), recall_score(gt[m], pred[m], pos_label=0)
            auc = roc_auc_score(gt[m], score[m])
        ref[f"domain_{d}"] = {"sensitivity": sens, "specificity": spec, "balanced_accuracy": (sens + spec) / 2,
                              "accuracy": accuracy_score(gt[m], pred[m]), "roc_auc": auc}
    return ref


def assert_same(ours: object, ref: object) -> None:
    if isinstance(ref, dict):
        assert set(ours) == set(ref)
        for k in ref:
            assert_same(ours[k], ref[k])
    elif ref is None or math.isnan(ref):
        assert ours is None  # NaN is written as null
    else:
        assert ours == pytest.approx(float(ref), abs=1e-12)


def outputs_of(out: Path) -> dict[str, list[dict]]:
    return {t["image"]: read_json(out / "jobs" / t["image"].removesuffix(".tiff") / "output" / OUTPUT_FILENAME)
            for t in read_json(out / GROUND_TRUTH)}


def test_end_to_end_pack_run_evaluate(dataset: Path, algorithm: str, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    report = run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    assert report["n_failed"] == 0 and report["parallel_jobs"] == 2
    assert all(j["status"] == "ok" and j["wall_s"] > 0 for j in report["jobs"])
    assert read_json(out / RUN)["n_jobs"] == len(read_json(out / GROUND_TRUTH))
    evaluate(out, log=quiet)
    metrics = read_json(out / METRICS)
    assert_same(metrics["aggregates"], organizer_reference(read_json(out / GROUND_TRUTH), outputs_of(out)))
    assert metrics["per_domain"]["3"]["name"] == "unknown"
    assert metrics["overall"]["n"] == 64 and metrics["organizer_errors"] == []
    for png in ("roc.png", "domains.png", "confusion.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_run_elsewhere_keeps_the_pack_clean(dataset: Path, algorithm: str, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    run(out, out=tmp_path / "model_a", command=algorithm, jobs=1, progress=False, log=quiet)
    assert not list(out.glob("jobs/*/output"))
    report = evaluate(tmp_path / "model_a", plots=False, log=quiet)
    assert report["n_pages"] == 64


def test_a_failed_job_is_reported_and_the_others_finish(dataset: Path, algorithm: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = packed(dataset, tmp_path / "lb")
    monkeypatch.setenv("FAIL_JOB", "stack_2")
    with pytest.raises(JobsFailed, match="1 of 9 jobs failed"):
        run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    jobs = {j["job"]: j for j in read_json(out / RUN)["jobs"]}
    assert jobs["stack_2"]["status"] == "failed" and jobs["stack_2"]["returncode"] == 3
    assert "simulated crash in stack_2" in jobs["stack_2"]["stderr_tail"]
    assert all(j["status"] == "ok" for name, j in jobs.items() if name != "stack_2")
    with pytest.raises(OutputsRejected, match="stack_2: no output file"):
        evaluate(out, plots=False, log=quiet)
    report = evaluate(out, plots=False, allow_missing=True, log=quiet)
    assert report["n_pages"] == 64 - 8 and "no job output (stack_2.tiff)" in report["warnings"][0]


def test_an_output_the_organizer_rejects_fails_the_run(dataset: Path, algorithm: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = packed(dataset, tmp_path / "lb")
    monkeypatch.setenv("BAD_JOB", "stack_4")
    with pytest.raises(JobsFailed):
        run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    job = next(j for j in read_json(out / RUN)["jobs"] if j["job"] == "stack_4")
    assert job["status"] == "invalid" and "Confidence needs to be of type float" in job["errors"][0]
    with pytest.raises(OutputsRejected, match=r"stack_4: entry 0: Output format is wrong\. Confidence"):
        evaluate(out, plots=False, log=quiet)


@pytest.mark.parametrize(("content", "reason"), [
    ('{"class": "normal", "confidence": 0.5}', "Needs list of dictionaries"),
    ('[{"class": "normal", "confidence": 0.5}]', "Results length does not match GT length"),
    ("not json", "output is not JSON"),
])
def test_evaluate_rejects_invalid_outputs(dataset: Path, algorithm: str, tmp_path: Path, content: str,
                                          reason: str) -> None:
    out = packed(dataset, tmp_path / "lb")
    run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    (out / "jobs" / "stack_1" / "output" / OUTPUT_FILENAME).write_text(content)
    with pytest.raises(OutputsRejected, match=reason):
        evaluate(out, plots=False, log=quiet)
    assert not (out / METRICS).exists()


def test_evaluate_matches_jobs_by_image_name(dataset: Path, algorithm: str, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    listing = out / "jobs" / "predictions.json"
    jobs = read_json(listing)
    jobs[0]["inputs"][0]["image"]["name"] = "stack_999.tiff"
    listing.write_text(json.dumps(jobs))
    with pytest.raises(OutputsRejected, match=r"No GT for this image: stack_999\.tiff"):
        evaluate(out, plots=False, log=quiet)


def test_one_class_ground_truth_is_not_scorable_by_the_organizer(dataset: Path, algorithm: str,
                                                                 tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb")
    run(out, command=algorithm, jobs=2, progress=False, log=quiet)
    truth = read_json(out / GROUND_TRUTH)
    for t in truth:
        t["labels"] = ["normal"] * len(t["labels"])
    (out / GROUND_TRUTH).write_text(json.dumps(truth))
    with pytest.raises(NotScorable, match="no atypical cases"):
        evaluate(out, plots=False, log=quiet)
    metrics = read_json(out / METRICS)
    assert metrics["aggregates"]["overall_sensitivity"] is None
    assert metrics["aggregates"]["domain_1"]["sensitivity"] == 0.0
    assert metrics["aggregates"]["domain_1"]["roc_auc"] is None


def test_training_validation_and_evaluate_agree(dataset: Path, tmp_path: Path) -> None:
    """The numbers training reports (domain_metrics on P(atypical)) and what evaluate computes from
    organizer-style outputs of the same predictions both equal scikit-learn's, called directly here
    (``organizer_reference``): evaluate calls domain_metrics, so comparing the two alone proves nothing."""
    out = packed(dataset, tmp_path / "lb")
    rng = np.random.default_rng(1)
    threshold = 0.42
    pages = [p for j in read_json(out / "pack.json")["jobs"] for p in j["pages"]]
    p_atypical = {p["image_id"]: float(np.clip(rng.normal(0.6 if p["label"] == "atypical" else 0.35, 0.2), 0, 1))
                  for p in pages}
    for job in read_json(out / "pack.json")["jobs"]:
        probs = [p_atypical[p["image_id"]] for p in job["pages"]]
        target = out / "jobs" / job["job"] / "output" / OUTPUT_FILENAME
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(to_entries(probs, threshold)))
    report = evaluate(out, plots=False, log=quiet)

    names = read_json(out / DOMAIN_NAMES_FILE)["domains"]
    y = [int(p["label"] == "atypical") for p in pages]
    trained = domain_metrics(y, [p_atypical[p["image_id"]] for p in pages],
                             [names[str(p["domain"])] for p in pages], threshold)
    reference = organizer_reference(read_json(out / GROUND_TRUTH), outputs_of(out))
    assert_same(report["aggregates"], reference)
    for key in ("balanced_accuracy", "sensitivity", "specificity", "accuracy", "roc_auc"):
        assert trained["overall"][key] == pytest.approx(reference[f"overall_{key}"], abs=1e-12), key
        for number in report["per_domain"]:
            ours, ref = trained["per_domain"][names[number]][key], reference[f"domain_{number}"][key]
            assert ours == pytest.approx(ref, abs=1e-12) or (math.isnan(ours) and math.isnan(ref)), (number, key)
    for key in ("tp", "fp", "tn", "fn"):
        assert report["overall"][key] == trained["overall"][key], key


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pack", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "lb")]) == InputError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read manifest") and "\n" not in err
    assert main(["evaluate", str(tmp_path)]) == InputError.exit_code
    assert issubclass(JobsFailed, AmfError) and JobsFailed.exit_code != 0


def test_cli_round_trip_in_a_subprocess(dataset: Path, algorithm: str, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "leaderboard"]
    for verb in (["pack", str(dataset), "--out", str(out), "--domain-column", "Scanner"],
                 ["run", str(out), "--command", algorithm, "--no-progress"],
                 ["evaluate", str(out), "--no-plots"]):
        done = subprocess.run(cli + verb, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
    assert "overall" in done.stdout and "3: unknown" in done.stdout
    done = subprocess.run([*cli, "--help"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and "pack" in done.stdout and "evaluate" in done.stdout


@pytest.mark.slow
def test_real_process_py_end_to_end(dataset: Path, tmp_path: Path) -> None:
    """The default command: the repository's process.py with the shipped model/."""
    out = packed(dataset, tmp_path / "lb", limit=8, where=["Scanner=A"])
    report = run(out, model=REPO / "model", jobs=1, progress=False, log=quiet)
    assert report["n_failed"] == 0
    assert evaluate(out, plots=False, log=quiet)["n_pages"] == 8


# Stands in for `docker`: checks the isolation flags the platform uses, maps the mounts and runs the
# fake algorithm on them.
FAKE_ENGINE = """#!{python}
import subprocess, sys
args = sys.argv[1:]
assert args[:2] == ["run", "--rm"], args
assert args[args.index("--network") + 1] == "none", args
mounts = dict(reversed(args[i + 1].rsplit(":", 2)[:2]) for i, a in enumerate(args) if a == "-v")
assert any(args[i + 1].endswith(":/input:ro") for i, a in enumerate(args) if a == "-v"), args
job = args[args.index("--name") + 1].rsplit("-", 1)[1]
sys.exit(subprocess.call([sys.executable, "{script}", mounts["/input"], mounts["/output"], job]))
"""


def test_run_in_a_container_per_job(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_algorithm.py"
    script.write_text(FAKE_ALGORITHM)
    engine = tmp_path / "bin" / "docker"
    engine.parent.mkdir()
    engine.write_text(FAKE_ENGINE.format(python=sys.executable, script=script))
    engine.chmod(0o755)
    monkeypatch.setenv("PATH", f"{engine.parent}{os.pathsep}{os.environ['PATH']}")
    out = packed(dataset, tmp_path / "lb")
    report = run(out, container="algorithm:latest", engine="docker", jobs=2, progress=False, log=quiet)
    assert report["n_failed"] == 0 and report["command"] == "algorithm:latest"
    assert evaluate(out, plots=False, log=quiet)["n_pages"] == 64


def test_a_hanging_job_is_killed_at_the_timeout(dataset: Path, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb", limit=8, where=["Scanner=A"])
    with pytest.raises(JobsFailed, match="1 of 1 jobs failed"):
        run(out, command="{python} -c 'import time; time.sleep(60)'", timeout=1, progress=False, log=quiet)
    job = read_json(out / RUN)["jobs"][0]
    assert job["status"] == "timeout" and job["wall_s"] < 30


def test_run_refuses_a_missing_model_before_starting_jobs(dataset: Path, tmp_path: Path) -> None:
    out = packed(dataset, tmp_path / "lb", limit=8, where=["Scanner=A"])
    with pytest.raises(InputError, match=r"model directory .* does not exist"):
        run(out, model=tmp_path / "nowhere", progress=False, log=quiet)
    assert not (out / RUN).exists()


def _engine_by_shell(path: str) -> subprocess.CompletedProcess:
    script = f'source "{REPO}/scripts/container_engine.sh"; container_engine'
    return subprocess.run([BASH, "-c", script], capture_output=True, text=True, env={**os.environ, "PATH": path},
                          check=False)


@pytest.mark.parametrize("where", ["python", "shell"])
def test_one_container_engine_rule(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTAINER_ENGINE if set, else docker when `docker info` answers, else podman: the same in
    leaderboard/engine.py and in scripts/container_engine.sh (test.sh, export.sh)."""
    from leaderboard.engine import container_engine

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(name: str, exit_code: int) -> None:
        (bin_dir / name).write_text(f"#!/bin/sh\nexit {exit_code}\n")
        (bin_dir / name).chmod(0o755)

    def engine() -> str | None:
        if where == "shell":
            done = _engine_by_shell(str(bin_dir))
            return done.stdout.strip() if done.returncode == 0 else None
        try:
            return container_engine()
        except InputError:
            return None

    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CONTAINER_ENGINE", raising=False)
    assert engine() is None  # nothing installed
    install("podman", 0)
    install("docker", 1)  # installed, but its daemon does not answer
    assert engine() == "podman"
    install("docker", 0)
    assert engine() == "docker"
    monkeypatch.setenv("CONTAINER_ENGINE", "podman")
    assert engine() == "podman"
    monkeypatch.setenv("CONTAINER_ENGINE", "nerdctl")
    assert engine() is None
