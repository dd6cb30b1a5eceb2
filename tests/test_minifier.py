"""The minifier (transfuse.compile.minifier) and `transfuse minify`: a planted miscompile in
a 50-node graph shrinks to the one wrong node, the repro script fails on its own, exceptions
count as failures of their own kind, a graph that does not fail is an error, a miscompile
inside a scan body shrinks inside the body."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transfuse.ir.core import Graph, Node
from transfuse.ir.errors import CompileError, TransfuseValueError
from transfuse.ir.interpreter import interpret
from transfuse.ir.primitives import PRIMITIVES

from transfuse._staging import stage
from transfuse.cli import main as cli_main
from transfuse.compile.minifier import all_values, minifier
from transfuse.compile.minify_check import fails_like, failure

ROOT = Path(__file__).resolve().parents[1]


def chain(x, s):
    """50 nodes; the one sin is in the middle."""
    for i in range(6):
        x = np.tanh(x) * s + np.exp(-x * x)
        if i == 3:
            x = np.sin(x) + x
        s = s - 0.1 * x.mean()
    return x.sum(), s


def sin_as_cos(graph: Graph, example_avals) -> object:
    """A test-only compiler: the interpreter, with every sin computed as cos."""
    nodes = [Node(PRIMITIVES["cos"], n.inputs, n.params, n.outputs, n.source)
             if n.prim.name == "sin" else n for n in graph.nodes]
    wrong = Graph(graph.inputs, nodes, graph.outputs, graph.consts)
    return lambda *xs: interpret(wrong, list(xs))


def exp_raises(graph: Graph, example_avals) -> object:
    """A test-only compiler that cannot compile exp and gets sin wrong."""
    if any(n.prim.name == "exp" for n in graph.nodes):
        raise CompileError("no rule for exp")
    return sin_as_cos(graph, example_avals)


def planted_check(graph: Graph, inputs: list) -> str | None:
    """What `--check` names in the CLI test: sin_as_cos against the interpreter."""
    return failure(sin_as_cos, graph, inputs)


def _args(dtype: str) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((3, 4)).astype(dtype), np.asarray(rng.standard_normal(), dtype)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_miscompile_shrinks_to_the_wrong_node(dtype):
    args = _args(dtype)
    graph = stage(chain, args).graph
    assert len(graph.nodes) >= 50
    first = failure(sin_as_cos, graph, args)
    assert first is not None and first.startswith("output")
    calls = []
    fails = fails_like(sin_as_cos, first)
    small, small_inputs = minifier(graph, args, lambda g, x: calls.append(1) or fails(g, x),
                                   max_calls=200)
    assert len(small.nodes) <= 3
    assert "sin" in [n.prim.name for n in small.nodes]
    assert failure(sin_as_cos, small, small_inputs) is not None
    assert len(calls) <= 200
    # The cut value fed to sin is what the interpreter computed for it in the whole graph.
    sin = next(n for n in graph.nodes if n.prim.name == "sin")
    reference = all_values(graph, args)[sin.inputs[0]]
    assert any(x.shape == reference.shape and np.array_equal(x, reference)
               for x in small_inputs)
    assert all(x.dtype == np.dtype(dtype) for x in small_inputs)
    # Deterministic: the same search gives the same graph.
    again, _ = minifier(graph, args, fails, max_calls=200)
    assert again == small


def test_exceptions_are_failures_of_their_own_kind():
    args = _args("float64")
    graph = stage(chain, args).graph
    first = failure(exp_raises, graph, args)
    assert first.startswith("raises CompileError")
    small, small_inputs = minifier(graph, args, fails_like(exp_raises, first))
    # It shrinks onto the exp that raises, not onto the wrong sin (another failure).
    assert [n.prim.name for n in small.nodes] == ["exp"]
    assert len(small_inputs) == len(small.inputs) == 1


def test_graph_that_does_not_fail_is_an_error_and_the_bound_holds():
    args = _args("float64")
    graph = stage(chain, args).graph
    with pytest.raises(TransfuseValueError, match="does not fail"):
        minifier(graph, args, lambda g, x: False)
    calls = []
    first = failure(sin_as_cos, graph, args)
    fails = fails_like(sin_as_cos, first)
    small, _ = minifier(graph, args, lambda g, x: calls.append(1) or fails(g, x), max_calls=3)
    assert len(calls) == 3
    assert len(small.nodes) > 3  # stopped early: the best found within 3 calls


def test_cli_writes_a_repro_that_fails_on_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "repro.py"
    code = cli_main(["minify", "tests.test_minifier:chain", "--signature", "f32[3,4],f32[]",
                     "--check", "tests.test_minifier:planted_check", "--out", str(out)])
    assert code == 1
    text = out.read_text()
    assert "sin" in text
    run = subprocess.run([sys.executable, str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "AssertionError: output 0: values differ" in run.stderr


def test_cli_jit_check_passes_on_a_correct_function(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "repro.py"
    code = cli_main(["minify", "tests.test_minifier:small_program", "--signature",
                     "f64[4],f32[]", "--out", str(out)])
    assert code == 0
    assert "nothing to minify" in capsys.readouterr().out
    assert not out.exists()


def small_program(x, y):
    return np.sin(x) * y + x.sum(), np.tanh(y)


def test_bad_target_and_signature_are_errors():
    with pytest.raises(TransfuseValueError, match="MODULE:FUNCTION"):
        cli_main(["minify", "tests.test_minifier", "--signature", "f32[3]"])
    with pytest.raises(TransfuseValueError, match="bad signature"):
        cli_main(["minify", "tests.test_minifier:chain", "--signature", "f32[3"])


def test_tutorial_minifies_the_planted_bug(tmp_path, capsys):
    import importlib.util

    path = ROOT / "docs" / "tutorials" / "minifier.py"
    spec = importlib.util.spec_from_file_location("_tutorial_minifier", path)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    res = tutorial.main(with_jit=False, folder=tmp_path)
    assert res["nodes_before"] >= 50 and res["nodes_after"] <= 3
    assert " sin " in res["minimal_graph"]
    assert res["repro_error"].startswith("output 0: values differ")
    tutorial._summary(res)
    assert f"to {res['nodes_after']} in" in capsys.readouterr().out


def interpreting(graph: Graph, example_avals) -> object:
    """A correct test-only compiler: the interpreter itself."""
    return lambda *xs: interpret(graph, list(xs))


def writes_into_x(x, y):
    head = x[:2]
    x[:2] = y
    return head * 2.0, x.sum()


def test_a_program_writing_into_its_inputs_is_checked_on_copies():
    rng = np.random.default_rng(3)
    args = [rng.standard_normal((5, 4)), rng.standard_normal(4)]
    before = [a.copy() for a in args]
    graph = stage(writes_into_x, [a.copy() for a in args]).graph
    assert any(n.prim.name == "assign" for n in graph.nodes)
    assert failure(interpreting, graph, args) is None  # each side ran on its own copies
    assert all(np.array_equal(a, b) for a, b in zip(args, before))
    small, small_inputs = minifier(graph, args, lambda g, xs: "assign" in str(g)
                                   and failure(interpreting, g, xs) is None)
    # The write defines no value, yet pruning keeps it (a graph needs an output, hence the
    # view beside it).
    assert [n.prim.name for n in small.nodes] == ["view_slice", "assign"]
    assert len(small_inputs) == len(small.inputs)


def test_tolerance_follows_the_least_precise_dtype_computed():
    from transfuse.compile.minify_check import mismatch, single_precision

    rng = np.random.default_rng(5)
    z = (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64)
    through_f32 = stage(lambda z: np.abs(z).astype(np.complex128), [z]).graph
    assert single_precision(through_f32)
    x = rng.standard_normal(3)
    assert not single_precision(stage(lambda x: np.sin(x) * 2.0, [x]).graph)
    # An ulp of float32 apart: a mismatch in float64 arithmetic, not after float32 steps.
    nudged = x * (1 + 1.2e-7)
    assert mismatch(nudged, x) is not None
    assert mismatch(nudged, x, single=True) is None
    assert mismatch(x + 1e-3, x, single=True) is not None
    assert mismatch(np.array([1, 2]), np.array([1, 3]), single=True) is not None


def _sin_as_cos_within(graph: Graph) -> Graph:
    """graph with every sin computed as cos, inside the sub-graphs its nodes hold too."""
    def fix(node: Node) -> Node:
        prim = PRIMITIVES["cos"] if node.prim.name == "sin" else node.prim
        params = {k: _sin_as_cos_within(p) if isinstance(p, Graph) else
                  tuple(_sin_as_cos_within(g) for g in p) if isinstance(p, tuple)
                  and all(isinstance(g, Graph) for g in p) and p else p
                  for k, p in node.params.items()}
        return Node(prim, node.inputs, params, node.outputs, node.source)
    return Graph(graph.inputs, [fix(n) for n in graph.nodes], graph.outputs, graph.consts,
                 graph.num_captures, graph.has_rng, name=graph.name)


def sin_as_cos_in_bodies(graph: Graph, example_avals) -> object:
    """A test-only compiler: the interpreter, sin computed as cos at every depth."""
    wrong = _sin_as_cos_within(graph)
    return lambda *xs: interpret(wrong, list(xs))


def test_a_miscompile_inside_a_scan_body_shrinks_inside_the_body():
    import transfuse as tx

    def rnn(h, xs):
        def step(h, x):
            for _ in range(3):
                h = np.tanh(h * 0.9 + x) + np.exp(-h * h) * 0.1
            h = np.sin(h) * 0.5 + h
            return h, h.sum()
        return tx.lax.scan(step, h, xs)

    rng = np.random.default_rng(8)
    args = [rng.standard_normal(4), rng.standard_normal((5, 4))]
    graph = stage(rnn, args).graph
    scans = [n for n in graph.nodes if n.prim.name == "scan"]
    assert len(scans) == 1 and len(scans[0].params["body"].nodes) >= 15
    first = failure(sin_as_cos_in_bodies, graph, args)
    small, small_inputs = minifier(graph, args, fails_like(sin_as_cos_in_bodies, first))
    assert [n.prim.name for n in small.nodes] == ["scan"]
    body = small.nodes[0].params["body"]
    assert len(body.nodes) <= 3 and "sin" in [n.prim.name for n in body.nodes]
    assert failure(sin_as_cos_in_bodies, small, small_inputs) is not None
