"""Numbers the README quotes from result files, checked against those files so they cannot drift.

* Training throughput: the README's table is the one in benchmarks/results/throughput.md, and every
  images/s figure and step ratio in the prose around it is a cell of that table; what the prose says
  about bf16 (slower for ERM and the single parts, faster for the full recipe) is what the table shows.
* Inference latency: latency.md and onnx_profile.md are generated from their raw JSON (the README
  copies their tables through benchmarks/readme_sync).
* The model card: the validation table, per-domain numbers, threshold and split sizes are those in
  model/model.json.

(The ablation and choices tables are copied by benchmarks/readme_sync and checked in test_readme_sync.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BENCHMARKS = REPO / "benchmarks" / "README.md"
RESULTS = REPO / "benchmarks" / "results"
AMI_BR_MANIFEST = REPO.parent / "shared/data/ami-br/manifest.csv"


def readme() -> str:
    """The README and the benchmarks page it sends its readers to, as one text."""
    return README.read_text(encoding="utf-8") + "\n\n" + BENCHMARKS.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of any level."""
    start = text.index(heading)
    rest = text[start + len(heading):]
    nxt = re.search(r"^#{1,6} ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def table_after(text: str, header_start: str) -> list[list[str]]:
    """The rows (cells stripped) of the table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        if set(line.replace("|", "").strip()) <= {"-", " "}:
            continue
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def prose(text: str) -> str:
    """A section without its table lines, with line breaks as spaces."""
    return " ".join(line for line in text.splitlines() if not line.startswith("|"))


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("×").split()[0])


# -- training throughput -----------------------------------------------------------------------------
THROUGHPUT_HEADER = "| arm | fp32 images/s |"


def throughput_rows() -> dict[str, dict[str, float]]:
    rows = table_after((RESULTS / "throughput.md").read_text(encoding="utf-8"), THROUGHPUT_HEADER)
    head = rows[0]
    assert head == ["arm", "fp32 images/s", "fp32 step vs ERM", "bf16 autocast images/s",
                    "bf16 autocast step vs ERM"], head
    return {r[0]: {"fp32": number(r[1]), "fp32_ratio": number(r[2]), "bf16": number(r[3]),
                   "bf16_ratio": number(r[4])} for r in rows[1:]}


def test_throughput_table_is_the_results_table() -> None:
    ours = table_after(section(readme(), "## Training throughput"), THROUGHPUT_HEADER)
    theirs = table_after((RESULTS / "throughput.md").read_text(encoding="utf-8"), THROUGHPUT_HEADER)
    assert ours == theirs


def test_throughput_prose_quotes_the_table() -> None:
    rows = throughput_rows()
    text = prose(section(readme(), "## Training throughput"))
    rates = {v for r in rows.values() for v in (r["fp32"], r["bf16"])}
    ratios = {v for r in rows.values() for v in (r["fp32_ratio"], r["bf16_ratio"])}
    quoted_rates = [float(m) for m in re.findall(r"(\d+\.\d+)(?= images/s| vs )", text)]
    quoted_ratios = [float(m[0]) for m in re.findall(r"(\d+\.\d+)×(?! target)( target)?", text) if not m[1]]
    assert quoted_rates and quoted_ratios
    assert set(quoted_rates) <= rates, sorted(set(quoted_rates) - rates)
    assert set(quoted_ratios) <= ratios, sorted(set(quoted_ratios) - ratios)
    # "A vs B images/s" pairs are one arm's bf16 and fp32 figures
    for bf16, fp32 in re.findall(r"(\d+\.\d) vs (\d+\.\d) images/s", readme()):
        assert any((r["bf16"], r["fp32"]) == (float(bf16), float(fp32)) for r in rows.values()), (bf16, fp32)


def test_what_the_readme_says_about_bf16_is_what_the_table_shows() -> None:
    rows = throughput_rows()
    text = " ".join(readme().split())
    full = rows.pop("Full")
    # the README: bf16 slower than fp32 for ERM and each part alone, faster for the full recipe
    assert "slower than fp32 for ERM and for each part alone" in text
    assert all(r["bf16"] < r["fp32"] for r in rows.values())
    assert "full recipe runs a little faster in bf16 than in fp32" in text
    assert full["bf16"] > full["fp32"]
    assert f"({full['bf16']} vs {full['fp32']} images/s)" in text
    assert "bf16 autocast is slower than fp32 for this" not in text  # the old, contradicted claim


# -- inference latency --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["latency", "latency-ensemble-dihedral4", "onnx_profile", "image_size"])
def test_latency_tables_are_generated_from_their_raw_json(tmp_path: Path, name: str) -> None:
    """latency.md, onnx_profile.md and image_size.md are what their scripts make of the committed raw JSON (the README
    copies their tables verbatim, checked by test_readme_sync.py): no number in them is typed by hand."""
    from benchmarks import image_size, latency, onnx_profile

    raw = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    if name.startswith("latency"):
        out = tmp_path / f"{name}.md"
        assert latency.main(["--table-only", "--json", str(RESULTS / f"{name}.json"), "--out", str(out)]) == 0
        made = out.read_text(encoding="utf-8")
    else:
        made = (onnx_profile if name == "onnx_profile" else image_size).table(raw)
    assert made == (RESULTS / f"{name}.md").read_text(encoding="utf-8")


# -- the model card -----------------------------------------------------------------------------------
def card() -> dict:
    return json.loads((REPO / "model" / "model.json").read_text(encoding="utf-8"))


def card_section() -> str:
    return " ".join(section(readme(), "## The shipped model: model card").split())


def test_model_card_is_generated_from_the_shipped_model(tmp_path: Path) -> None:
    """model_card.md (which the README quotes, checked by test_readme_sync.py) is what benchmarks.model_card
    makes of model/ and the committed raw results now: shipping new weights without regenerating it fails here."""
    from benchmarks.model_card import main

    out = tmp_path / "model_card.md"
    assert main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (RESULTS / "model_card.md").read_text(encoding="utf-8")
    # and what a queue's commit regenerates it with (benchmarks.derived, from the card's sources)
    from benchmarks.derived import _card_text

    assert _card_text(RESULTS.parents[1]) == out.read_text(encoding="utf-8")
    assert f"class atypical when P ≥ **{card()['threshold']:.3f}**" in card_section()


def test_the_calibration_paragraph_quotes_the_shipped_card() -> None:
    """The Ensemble section's words on calibration name the shipped model's numbers, not an earlier
    ship's (it said 0.233 for a while after the threshold had become 0.280)."""
    text = " ".join(section(readme(), "**Calibration: Platt scaling, chosen out of fold.**").split())
    oof = card()["metrics"]["oof"]
    crossed = oof["calibration_choice"]["cross_fitted"][card()["calibration"]["kind"]]
    assert f"out-of-fold ECE {oof['ece_before']:.3f} before calibration" in text
    assert f"(ECE {crossed['ece']:.3f} cross-fitted)" in text
    assert f"the threshold sits at the card's {card()['threshold']:.3f}" in text


def test_model_card_prose_states_the_paper_count_consistently() -> None:
    text = card_section()
    assert "All of AMi-Br" not in text  # the paper lists more figures than this repository trains on
    total = int(re.search(r"([\d,]+) patches of 128 px", text)[1].replace(",", ""))
    paper, missing = re.search(r"paper lists ([\d,]+) mitotic figures.*?: ([\d,]+) of the paper", text).groups()
    assert int(paper.replace(",", "")) - total == int(missing.replace(",", ""))


@pytest.mark.skipif(not AMI_BR_MANIFEST.is_file(), reason="AMi-Br is not beside the repository")
def test_model_card_dataset_counts_are_the_manifests() -> None:
    import csv

    with open(AMI_BR_MANIFEST, newline="") as fh:
        rows = list(csv.DictReader(fh))
    text = card_section()
    atypical = sum(r["majority"] == "AMF" for r in rows)
    slides = len({r["filename"] for r in rows})
    assert f"{len(rows):,} patches of 128 px from {slides} human breast cancer slides, {atypical} atypical" in text


def test_throughput_section_is_rendered_from_its_raw_record() -> None:
    from benchmarks.ablation import ARMS
    from benchmarks.throughput import section

    rates = dict(zip(ARMS, (100.0, 95.0, 90.0, 80.0, 50.0), strict=True))
    raw = {"device": "cuda", "machine_text": "a GPU", "args": {"batch_size": 256, "steps": 30, "warmup": 1},
           "images_per_s": {"fp16 AMP": rates}}
    text = section(raw)
    assert text.startswith("## CUDA: a GPU\n") and "Batch 256 at 128 px" in text and "median of 30 steps" in text
    assert "| ERM | 100.0 | 1.00× |" in text and "| Full | 50.0 | 2.00× |" in text
