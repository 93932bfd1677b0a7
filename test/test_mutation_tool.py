"""benchmarks/mutation.py: the mutator changes one thing at a time, in place, and its report says when it is partial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.mutation import TARGETS, _splice, mutants_of, write_report

TOY = '''"""A docstring × with ≥ non-ASCII text, never mutated."""


def f(a: int, b: float = 0.5) -> bool:
    """Nor is this one."""
    label = "×"  # a string before the code on the line: byte columns, not characters
    log.info("%d", 7)  # logging only: left alone
    return a >= b and -a < 2 * b or not label
'''.encode()


def toy_repo(tmp_path: Path) -> Path:
    """A scratch repository with only the tracing plugin: a toy module and its tests go in by hand."""
    from benchmarks import mutation

    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    for name in ("__init__.py", "line_tests.py"):
        (repo / "benchmarks" / name).write_bytes((mutation.REPO / "benchmarks" / name).read_bytes())
    return repo


def test_every_mutant_changes_one_thing_and_compiles() -> None:
    mutants = mutants_of("toy.py", TOY)
    kinds = {m.operator for m in mutants}
    assert {"compare >= -> <", "compare >= -> >", "compare < -> >=", "compare < -> <=", "bool and -> or",
            "bool or -> and", "drop unary -", "drop unary not", "arith * -> /", "constant 2 -> 3",
            "constant 0.5 -> 1.5"} <= kinds
    assert not any("7" in m.operator for m in mutants)  # inside a logging call
    for m in mutants:
        out = _splice(TOY, m.start, m.end, m.mutated)
        compile(out, "toy.py", "exec")
        changed = [(a, b) for a, b in zip(TOY.decode().splitlines(), out.decode().splitlines(), strict=True) if a != b]
        assert len(changed) == 1, m  # one line differs, and only there
        assert changed[0][0].startswith(("def f", "    return")), m
    assert len({m.id for m in mutants}) == len(mutants)


def test_targets_name_existing_modules_and_tests() -> None:
    repo = Path(__file__).resolve().parents[1]
    for module, tests in TARGETS.items():
        assert (repo / module).is_file(), module
        assert tests and all((repo / t).is_file() for t in tests), module


def test_every_listed_equivalence_names_a_mutant_of_todays_code() -> None:
    """An entry whose line was edited away keys nothing: it would read as a reason no run can show."""
    from benchmarks.mutation import EQUIVALENT

    repo = Path(__file__).resolve().parents[1]
    live = {module: {(m.code, m.operator, m.original, m.mutated)
                     for m in mutants_of(module, (repo / module).read_bytes())}
            for module in {key[0] for key in EQUIVALENT}}
    stale = [key for key in EQUIVALENT if key[1:] not in live[key[0]]]
    assert not stale, f"EQUIVALENT entries for code that changed: {stale}"
    assert {key[0] for key in EQUIVALENT} <= TARGETS.keys()


def test_report_marks_a_partial_run(tmp_path: Path) -> None:
    record = {"id": "amf/organizer.py#1", "module": "amf/organizer.py", "line": 3, "operator": "compare >= -> >",
              "original": "p >= t", "mutated": "(p > t)", "status": "survived", "seconds": 1.0, "killed_by": None}
    data = {"modules": {"amf/organizer.py": {
        "tests": ["test/test_metrics.py"], "n_mutants": 2, "complete": True, "commit": "abc1234",
        "mutants": [record, {**record, "id": "amf/organizer.py#2", "status": "killed", "killed_by": "t"}],
        "summary": {"killed": 1, "timeout": 0, "survived": 1, "error": 0, "run": 2, "kill_rate": 0.5}}}}
    out = tmp_path / "mutation.md"
    write_report(json.loads(json.dumps(data)), out)
    text = out.read_text()
    assert "**PARTIAL RESULT**" in text and "`amf/metrics.py`" in text
    assert "| `amf/organizer.py` | abc1234 | 2 | 2 | 1 | 0 | 1 | 0 | 0 | 50.0% |" in text
    assert "`p >= t`" in text and "`(p > t)`" in text  # the survivor is listed


def test_an_equivalence_follows_its_line_when_code_moves_and_lapses_when_the_line_changes(monkeypatch) -> None:
    from benchmarks import mutation

    key = ("m.py", "return flag is True", "constant True -> False", "True", "(False)")
    monkeypatch.setitem(mutation.EQUIVALENT, key, "a reason")

    def excused(source: str) -> list[int]:
        return [m.line for m in mutation.mutants_of("m.py", source.encode())
                if mutation.equivalent_reason("m.py", {**vars(m)})]

    body = "def f(flag):\n    return flag is True\n\n\ndef g():\n    return True\n"
    assert excused(body) == [2]  # the same constant in g is not excused
    assert excused('"""moved down"""\nimport os\n\n\n' + body) == [6]
    assert excused(body.replace("flag is True", "flag == True")) == []


def test_a_survivor_shown_equivalent_leaves_the_score_and_says_why(monkeypatch) -> None:
    from benchmarks import mutation

    record = {"line": 3, "operator": "compare >= -> >", "original": "p >= t", "mutated": "(p > t)",
              "status": "survived"}
    records = [record, {**record, "status": "killed"}, {**record, "original": "q", "status": "survived"}]
    assert mutation.summarize(records, "amf/organizer.py")["kill_rate"] == pytest.approx(1 / 3, abs=1e-4)
    monkeypatch.setitem(mutation.EQUIVALENT, ("amf/organizer.py", None, "compare >= -> >", "p >= t", "(p > t)"),
                        "p is never equal to t")  # these records carry no code line
    s = mutation.summarize(records, "amf/organizer.py")
    assert (s["equivalent"], s["survived"], s["kill_rate"]) == (1, 1, 0.5)


def test_line_selected_tests_find_kills_and_a_survivor_still_meets_every_test(tmp_path: Path) -> None:
    """``f`` runs in the test process, so its mutants meet only ``test_f``; ``h`` runs only in a subprocess,
    which the tracer cannot see, so its mutant meets no selected test and is killed by the full list."""
    from benchmarks import mutation

    repo = toy_repo(tmp_path)
    (repo / "m.py").write_text("def f(a):\n    return a + 1\n\n\ndef h():\n    return 3\n")
    (repo / "test_m.py").write_text(
        "import subprocess, sys\nimport m\n\n\ndef test_f():\n    assert m.f(1) == 2\n\n\n"
        "def test_h_in_a_subprocess():\n"
        "    code = 'import m; assert m.h() == 3'\n"
        "    assert subprocess.run([sys.executable, '-c', code], cwd=m.__file__.rsplit('/', 1)[0]).returncode == 0\n")
    result = mutation.run_module(repo, "m.py", ["test_m.py"], timeout=60.0, limit=None, log=lambda *_: None)
    by_line = {(r["line"], r["operator"]): r for r in result["mutants"]}
    assert result["complete"] and result["summary"]["kill_rate"] == 1.0, result["mutants"]
    f_mutants = [r for (line, _), r in by_line.items() if line == 2]
    assert len(f_mutants) >= 2 and all(r["selected_tests"] == 1 and r["killed_by"] == "test_m.py::test_f"
                                       for r in f_mutants)
    h = by_line[(6, "constant 3 -> 4")]
    assert h["selected_tests"] == 0 and h["killed_by"] == "test_m.py::test_h_in_a_subprocess"
    assert (repo / "m.py").read_text().endswith("return 3\n")  # the original is back


def test_statement_lines_point_continuation_lines_at_their_statement() -> None:
    from benchmarks.mutation import statement_lines

    lines = statement_lines(b"x = (1 +\n     2)\nif x:\n    y = [\n        3]\n")
    assert (lines[1], lines[2], lines[3], lines[4], lines[5]) == (1, 1, 3, 4, 4)


def test_a_timeout_stands_only_when_a_second_run_with_twice_the_time_times_out_too(monkeypatch) -> None:
    from benchmarks import mutation

    def fake(outcomes: list[str]):
        calls: list[float] = []

        def run_tests(repo: Path, tests: list[str], timeout: float, trace: object = None) -> dict:
            calls.append(timeout)
            return {"status": outcomes[len(calls) - 1], "seconds": timeout, "killed_by": None}
        return calls, run_tests

    calls, run = fake(["timeout", "survived"])
    monkeypatch.setattr(mutation, "run_tests", run)
    got = mutation._run_confirming_timeouts(Path("."), ["t.py"], 10.0)
    assert calls == [10.0, 20.0] and got["status"] == "survived" and got["seconds"] == 30.0
    assert got["retried_after_timeout"]
    calls, run = fake(["timeout", "timeout"])
    monkeypatch.setattr(mutation, "run_tests", run)
    assert mutation._run_confirming_timeouts(Path("."), ["t.py"], 10.0)["status"] == "timeout"
    calls, run = fake(["killed"])
    monkeypatch.setattr(mutation, "run_tests", run)
    assert mutation._run_confirming_timeouts(Path("."), ["t.py"], 10.0)["status"] == "killed" and calls == [10.0]


def test_recheck_runs_only_the_survivors_against_new_tests_and_refuses_a_changed_module(
        tmp_path: Path, monkeypatch) -> None:
    from benchmarks import mutation

    repo = toy_repo(tmp_path)
    source = "def f(a):\n    return a + 1\n"
    (repo / "m.py").write_text(source)
    (repo / "test_weak.py").write_text("import m\n\n\ndef test_f():\n    assert m.f(0) > 0\n")  # + -> - survives
    result = mutation.run_module(repo, "m.py", ["test_weak.py"], timeout=60.0, limit=None, log=lambda *_: None)
    result["commit"] = "abc1234"
    survived = [r for r in result["mutants"] if r["status"] == "survived"]
    assert survived and result["summary"]["kill_rate"] < 1.0
    (repo / "test_strong.py").write_text("import m\n\n\ndef test_f():\n    assert m.f(1) == 2\n")
    monkeypatch.setattr(mutation, "_git", lambda *args: source.strip())  # the module as it was at abc1234
    ran: list[list[str]] = []
    real = mutation.run_tests
    monkeypatch.setattr(mutation, "run_tests", lambda repo, tests, timeout, trace=None: ran.append(tests)
                        or real(repo, tests, timeout, trace))
    mutation.recheck_module(repo, "m.py", result, ["test_strong.py"], "def5678", log=lambda *_: None)
    assert len(ran) == len(survived)  # only the survivors ran again
    assert result["summary"]["kill_rate"] == 1.0 and all(r["rechecked_at"] == "def5678" for r in survived)
    assert result["rechecks"] == [{"commit": "def5678", "tests": ["test_strong.py"], "survivors": len(survived),
                                   "killed": len(survived)}]
    assert (repo / "m.py").read_text() == source
    monkeypatch.setattr(mutation, "_git", lambda *args: "def f(a):\n    return a + 2")
    with pytest.raises(SystemExit, match="changed since abc1234"):
        mutation.recheck_module(repo, "m.py", result, ["test_strong.py"], "def5678", log=lambda *_: None)


def test_an_interrupted_module_resumes_without_running_its_measured_mutants_again(tmp_path: Path) -> None:
    from benchmarks import mutation

    repo = toy_repo(tmp_path)
    (repo / "m.py").write_text("def f(a):\n    return a + 1\n")
    (repo / "test_m.py").write_text("import m\n\n\ndef test_f():\n    assert m.f(1) == 2\n")
    first = mutation.run_module(repo, "m.py", ["test_m.py"], 60.0, limit=1, log=lambda *_: None)
    assert len(first["mutants"]) == 1 and not first["complete"]
    first["commit"] = "abc1234"
    earlier = mutation.resumable(first, "m.py", ["test_m.py"], "abc1234")
    assert earlier and earlier[0]["measured_at"] == "abc1234"
    logged: list[str] = []
    second = mutation.run_module(repo, "m.py", ["test_m.py"], 60.0, limit=None, log=logged.append, earlier=earlier)
    assert second["complete"] and second["mutants"][0]["id"] == first["mutants"][0]["id"]
    assert sum("] line" in line for line in logged) == len(second["mutants"]) - 1  # the first was not run again
    assert mutation.resumable(second, "m.py", ["test_m.py"], "abc1234") == []  # complete: nothing to resume
    assert mutation.resumable(first, "m.py", ["other_test.py"], "abc1234") == []  # other tests: start again


def test_a_listed_equivalent_is_recorded_without_running_and_counts_as_a_survivor_once_unlisted(
        tmp_path: Path, monkeypatch) -> None:
    from benchmarks import mutation

    repo = toy_repo(tmp_path)
    (repo / "m.py").write_text("def f(a):\n    return a + 1\n")
    (repo / "test_m.py").write_text("import m\n\n\ndef test_f():\n    assert m.f(1) == 2\n")
    key = ("m.py", "return a + 1", "arith + -> -", "a + 1", "(a - 1)")
    monkeypatch.setitem(mutation.EQUIVALENT, key, "a reason")
    result = mutation.run_module(repo, "m.py", ["test_m.py"], 60.0, limit=None, log=lambda *_: None)
    listed = [r for r in result["mutants"] if (r["line"], r["operator"]) == (2, "arith + -> -")]
    assert listed[0]["status"] == "equivalent" and listed[0]["not_run"]
    s = mutation.summarize(result["mutants"], "m.py")
    assert (s["equivalent"], s["survived"], s["kill_rate"]) == (1, 0, 1.0)
    result.update(commit="abc1234", complete=True)
    monkeypatch.setitem(mutation.TARGETS, "m.py", ["test_m.py"])
    mutation.write_report({"modules": {"m.py": result}}, tmp_path / "m.md")
    assert "equivalent (not run): a reason" in (tmp_path / "m.md").read_text()
    monkeypatch.delitem(mutation.EQUIVALENT, key)
    s = mutation.summarize(result["mutants"], "m.py")
    assert (s["equivalent"], s["survived"]) == (0, 1) and s["kill_rate"] < 1.0
