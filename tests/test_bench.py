"""The benchmark harness: every suite in --quick mode, the JSON schema, planted wrong baselines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from transfuse.bench.suites import SUITES

from transfuse.bench import Case, Runner, Unavailable
from transfuse.bench.check import compare
from transfuse.bench.cli import main
from transfuse.bench.core import Absent, numpy_system
from transfuse.bench.harness import Settings, run_case
from transfuse.bench.report import PlotError, render_markdown, render_text, to_document
from transfuse.bench.schema import SchemaError, validate
from transfuse.bench.timing import measure

QUICK = Settings(quick=True, repeat=1, warmup=0, min_sample_s=0.0005,
                 baselines=frozenset({"numpy"}))


def chain(x):
    return np.tanh(x) * np.exp(-x * x) + 0.5 * x


def make_case(baselines: dict, transform=lambda tx: chain) -> Case:
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    return Case("test", "chain", "a small chain", lambda: (x,), transform=transform,
                plain=True, baselines=baselines)


# ---------------------------------------------------------------------------------------
# Every suite in --quick mode, a group of suites per fresh process (JAX's x64 mode stays out
# of pytest). One test a group, so pytest-xdist spreads the groups over its workers (one
# process for all of them was a single 3-minute test that kept one core busy while the other
# idled); groups rather than one process a suite because each process pays its imports of
# transfuse, JAX and torch again (about 5 CPU-seconds). The groups hold about equal CPU
# times, measured suite by suite (docs/testing.md, "Session 8: suite time").

MEASURED_GROUPS = {
    "a": ("elementwise", "softmax", "layernorm", "per-sample-grads", "ensembling", "dispatch",
          "checkpoint"),
    "b": ("jacobians", "hessian", "maml", "ntk", "dask"),
    "c": ("linalg", "fft", "sorting", "control"),
    "d": ("aot", "compile"),
}
# A suite added since the groups were measured runs in a group of its own.
QUICK_GROUPS = {**MEASURED_GROUPS, "new": tuple(
    s for s in SUITES if not any(s in group for group in MEASURED_GROUPS.values()))}
QUICK_GROUPS = {name: group for name, group in QUICK_GROUPS.items() if group}
REPORTED = "per-sample-grads"  # its group also writes the Markdown table and the plot


def test_quick_groups_hold_every_suite_once():
    listed = [suite for group in QUICK_GROUPS.values() for suite in group]
    assert sorted(listed) == sorted(SUITES) and len(set(listed)) == len(listed)
    assert REPORTED in listed


@pytest.mark.parametrize("group", list(QUICK_GROUPS))
def test_quick_run_of_every_suite_passes(group, tmp_path):
    """The group's suites pass, their JSON follows the schema with every case ok, and (one
    group) the Markdown table and the PNG plot are written."""
    suites = QUICK_GROUPS[group]
    paths = {k: tmp_path / f"bench.{k}" for k in ("json", "md", "png")}
    outputs = ["--json", str(paths["json"])]
    if REPORTED in suites:
        outputs += ["--markdown", str(paths["md"]), "--plot", str(paths["png"])]
    proc = subprocess.run(
        [sys.executable, "-m", "transfuse.bench.cli", "--quick", "--suite", *suites, *outputs],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "bench: [1/" in proc.stderr  # progress lines
    document = json.loads(paths["json"].read_text())
    validate(document)
    assert document["ok"] is True
    assert {c["suite"] for c in document["cases"]} == set(suites)
    for case in document["cases"]:
        assert case["status"] == "ok", case
        numpy_like = [system for name, system in case["systems"].items()
                      if "numpy" in name or name == "jax"]  # dask's is "dask-numpy"
        assert numpy_like and all(s["status"] in ("ok", "absent") for s in numpy_like)
        for system in case["systems"].values():
            if system["status"] == "ok":
                assert system["min_ms"] <= system["median_ms"] <= system["max_ms"]
    if REPORTED in suites:
        markdown = paths["md"].read_text()
        assert "| case |" in markdown and f"{REPORTED}/vmap-grad" in markdown
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------
# Checking before timing


def test_planted_wrong_baseline_fails_the_case():
    case = make_case({"numpy": numpy_system(chain),
                      "wrong": numpy_system(lambda x: chain(x) * 1.01)})
    result = run_case(case, QUICK)
    assert result.reference == "transfuse-interpreter"
    assert result.failed
    wrong = result.systems["wrong"]
    assert wrong.status == "mismatch" and wrong.timing is None
    assert "max |difference|" in wrong.reason
    assert result.systems["numpy"].status == "ok"


def test_wrong_numpy_is_caught_when_transfuse_has_no_reference():
    unavailable = lambda tx: (_ for _ in ()).throw(Unavailable("not yet"))
    case = make_case({"numpy": numpy_system(lambda x: chain(x) + 1),
                      "other": numpy_system(chain)}, transform=unavailable)
    result = run_case(case, QUICK)
    assert result.reference == "numpy"
    assert result.systems["transfuse"].status == "unavailable"
    assert result.systems["other"].status == "mismatch"
    assert result.failed


def test_a_crashing_transfuse_reference_fails_the_case(capsys):
    from transfuse.bench.harness import print_failure

    def broken(x):
        raise ValueError("boom")

    result = run_case(make_case({"numpy": numpy_system(chain)}, transform=lambda tx: broken),
                      QUICK)
    assert result.failed and result.reference == "numpy"
    print_failure(result)
    assert "reference: transfuse reference failed: ValueError: boom" in capsys.readouterr().err


def test_absent_and_crashing_baselines():
    def absent(inputs):
        raise Absent("nolib is not installed")

    def crashing(inputs):
        return Runner(call=lambda: 1 / 0)

    result = run_case(make_case({"numpy": numpy_system(chain), "nolib": absent,
                                 "crash": crashing}), QUICK)
    assert result.systems["nolib"].status == "absent"
    assert result.systems["crash"].status == "error"
    assert "ZeroDivisionError" in result.systems["crash"].reason
    assert result.failed


def test_cli_exits_nonzero_on_a_planted_wrong_baseline(tmp_path, capsys):
    cases = tmp_path / "my_cases.py"
    cases.write_text(textwrap.dedent("""
        import numpy as np
        from transfuse import bench

        @bench.case(np.linspace(-1, 1, 32))
        def square(x):
            return x * x

        @square.baseline("wrong")
        def square_wrong(x):
            return x * x + 0.5
    """))
    assert main([str(cases), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "FAILED my_cases/square" in captured.err and "MISMATCH" in captured.err


def test_user_cases_file(tmp_path, capsys):
    cases = tmp_path / "my_cases.py"
    cases.write_text(textwrap.dedent("""
        import numpy as np
        from transfuse import bench

        @bench.case(setup=lambda: (np.arange(16.0),), name="shifted")
        def shift(x):
            '''x + 1, squared.'''
            return (x + 1) * (x + 1)

        @shift.baseline("by-hand")
        def shift_by_hand(x):
            return x * x + 2 * x + 1
    """))
    json_path = tmp_path / "out.json"
    assert main([str(cases), "--quiet", "--json", str(json_path)]) == 0
    document = json.loads(json_path.read_text())
    validate(document)
    (case,) = document["cases"]
    assert (case["suite"], case["name"], case["description"]) == \
        ("my_cases", "shifted", "x + 1, squared.")
    assert case["systems"]["eager"]["status"] == "ok"
    assert case["systems"]["by-hand"]["status"] == "ok"
    assert "my_cases/shifted" in capsys.readouterr().out


def test_usage_errors(tmp_path, capsys):
    assert main(["--suite", "nope"]) == 2
    assert main(["--baselines", "numpy,cobol"]) == 2
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main([str(empty)]) == 2
    assert "registers no cases" in capsys.readouterr().err


def test_list_names_every_suite(capsys):
    assert main(["--list", "--quick"]) == 0
    listed = capsys.readouterr().out
    for suite in SUITES:
        assert f"{suite}/" in listed


# ---------------------------------------------------------------------------------------
# Pieces


def test_compare_is_relative_to_the_reference_scale():
    ref = (np.array([1000.0, 0.0]), np.ones(3))
    assert compare((np.array([1000.1, 0.05]), np.ones(3)), ref, rtol=1e-3, atol=0).ok
    assert not compare((np.array([1000.0, 2.0]), np.ones(3)), ref, rtol=1e-3, atol=0).ok
    assert not compare((np.ones(2),), ref, rtol=1e-3, atol=0).ok
    shape = compare((np.ones(3), np.ones(3)), ref, rtol=1e-3, atol=0)
    assert not shape.ok and "shape" in shape.message
    assert not compare(np.array([np.nan]), np.array([1.0]), rtol=1, atol=1).ok


def test_measure_loops_fast_calls(monkeypatch):
    # A clock that only the call advances, by 1 us: on a busy machine a preempted first
    # call of a real clock could look slow and leave too few calls per sample.
    from transfuse.bench import timing as timing_module

    now = [0.0]
    monkeypatch.setattr(timing_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def call():
        now[0] += 1e-6

    timing = measure(call, repeat=3, warmup=1, min_sample_s=0.001)
    assert timing.samples == 3 and timing.calls_per_sample > 10
    assert timing.min_s <= timing.median_s <= timing.max_s
    assert timing.median_s == pytest.approx(1e-6)


def test_measure_keeps_expensive_calls_within_budget():
    import time
    calls = []
    timing = measure(lambda: calls.append(time.sleep(0.11)), repeat=7, warmup=2,
                     min_sample_s=0.01, budget_s=0.2)
    assert timing.samples == 3 and timing.calls_per_sample == 1
    assert len(calls) == 3  # no extra warm-up: the first timed call is a sample
    assert timing.min_s >= 0.11


def test_schema_validator_rejects_bad_documents():
    result = run_case(make_case({"numpy": numpy_system(chain)}), QUICK)
    document = to_document([result], QUICK, ["transfuse", "bench"])
    validate(json.loads(json.dumps(document)))
    for breakage, message in [
        (lambda d: d.pop("machine"), "missing required key 'machine'"),
        (lambda d: d["cases"][0]["systems"]["numpy"].update(status="fine"), "not one of"),
        (lambda d: d["cases"][0]["systems"]["numpy"].update(median_ms="1"), "expected"),
        (lambda d: d["settings"].update(repeat=0), "below the minimum"),
        (lambda d: d["cases"][0].update(extra=1), "unexpected key"),
    ]:
        broken = json.loads(json.dumps(document))
        breakage(broken)
        with pytest.raises(SchemaError, match=message):
            validate(broken)


def test_reports_show_unavailable_and_ratios():
    result = run_case(make_case({"numpy": numpy_system(chain)}), QUICK)
    text = render_text([result])
    assert "test/chain" in text and "ok vs transfuse-interpreter" in text
    document = to_document([result], QUICK, ["transfuse", "bench"])
    assert render_markdown(document, [result]).count("| test/chain |") == 1
    transfuse = result.systems["transfuse"]
    if transfuse.status == "ok":  # once transfuse.jit has landed
        assert result.systems["numpy"].ratio is not None
    else:
        assert transfuse.status == "unavailable" and transfuse.reason


def test_transfuse_column_and_ratios_with_a_stand_in_jit(monkeypatch):
    import transfuse
    monkeypatch.setattr(transfuse, "jit", lambda fn, **kwargs: fn, raising=False)
    result = run_case(make_case({"numpy": numpy_system(chain)}), QUICK)
    assert result.systems["transfuse"].status == "ok"
    assert result.systems["transfuse"].ratio == 1.0
    assert result.systems["numpy"].ratio > 0


def test_jit_raising_not_implemented_is_unavailable(monkeypatch):
    import transfuse

    def jit(fn, **kwargs):
        raise NotImplementedError("no lowering for tanh yet")

    monkeypatch.setattr(transfuse, "jit", jit, raising=False)
    result = run_case(make_case({"numpy": numpy_system(chain)}), QUICK)
    assert result.systems["transfuse"].status == "unavailable"
    assert "no lowering for tanh" in result.systems["transfuse"].reason
    assert not result.failed


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    from transfuse.bench.report import write_plot
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotError, match="pip install matplotlib"):
        write_plot([], str(tmp_path / "x.png"))
