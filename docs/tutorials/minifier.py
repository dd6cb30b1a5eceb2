"""The minifier
=============

When a compiler gets a program wrong, the program is rarely small: a model's training step
has hundreds of nodes, and the bug is in one of them. The minifier
(`transfuse.compile.minifier`) shrinks the graph while the failure stays, down to the few
nodes that show it, and `transfuse minify` writes that graph into a script that fails on
its own: something to attach to an issue, or to turn into a test.

This is the transfuse edition of functorch's minifier tutorial: we plant a bug in a
test-only compiler, minify a 60-node program that it miscompiles, and run the repro.

Run it with `python docs/tutorials/minifier.py`.
"""

# %% [markdown]
# ## A compiler with a planted bug
#
# A compiler in transfuse.compile is called as `compiler(graph, example_avals)` and returns
# a callable. Ours runs the reference interpreter, except that it computes every `sin` as a
# `cos`. It lives in a small module of its own, so that the repro script can import it.

# %%
from __future__ import annotations

import importlib
import runpy
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import transfuse as tx
from transfuse.compile import minifier
from transfuse.compile.minify_check import fails_like, failure
from transfuse.compile.minify_cli import write_repro

PLANTED = textwrap.dedent('''
    """A test-only compiler: the reference interpreter, with sin computed as cos."""
    from transfuse.compile.minify_check import failure
    from transfuse.ir.core import Graph, Node
    from transfuse.ir.interpreter import interpret
    from transfuse.ir.primitives import PRIMITIVES


    def sin_as_cos(graph, example_avals):
        nodes = [Node(PRIMITIVES["cos"], n.inputs, n.params, n.outputs, n.source)
                 if n.prim.name == "sin" else n for n in graph.nodes]
        wrong = Graph(graph.inputs, nodes, graph.outputs, graph.consts)
        return lambda *xs: interpret(wrong, list(xs))


    def planted_check(graph, inputs):
        return failure(sin_as_cos, graph, inputs)
''')


def load_planted(folder: Path):
    """Write the planted compiler's module into folder and import it."""
    (folder / "planted_bug.py").write_text(PLANTED)
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("planted_bug", None)
        return importlib.import_module("planted_bug")
    finally:
        sys.path.remove(str(folder))


# %% [markdown]
# ## A program it miscompiles
#
# Six steps of a small recurrence, one of which takes a `sin`: about 60 nodes.

# %%
def program(x, s):
    for step in range(6):
        x = np.tanh(x) * s + np.exp(-x * x)
        if step == 3:
            x = np.sin(x) + x
        s = s - 0.1 * x.mean()
    return x.sum(), s


def make_inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 4)), np.asarray(rng.standard_normal())]


# %% [markdown]
# ## Minify
#
# `failure` compares the compiled graph with the interpreter (dtype-aware tolerances; a
# compiler raising counts too). `fails_like` keeps the search on *this* failure. The
# minifier cuts the graph: a dropped node's values become inputs holding what the
# interpreter computed for them, so the one `sin` is left on its own.

# %%
def main(with_jit: bool = True, folder: Path | None = None) -> dict:
    """Run the tutorial; return its results (with_jit: the real backend on the result).
    The planted compiler's module and the repro are written into folder (a new temporary
    folder by default)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="transfuse-minifier-"))
    planted = load_planted(folder)
    inputs = make_inputs()
    graph = tx.make_graph(program)(*inputs)
    first = failure(planted.sin_as_cos, graph, inputs)
    calls = []

    def fails(g, xs):
        calls.append(len(g.nodes))
        return fails_like(planted.sin_as_cos, first)(g, xs)

    small, small_inputs = minifier(graph, inputs, fails)
    # The repro: the graph and its inputs pickled inside, the check imported by name.
    repro = write_repro(folder / "repro.py", small, small_inputs,
                        failure(planted.sin_as_cos, small, small_inputs),
                        check="planted_bug:planted_check")
    try:
        runpy.run_path(str(repro), run_name="__main__")
        repro_error = None
    except AssertionError as error:  # the repro fails: the bug is there
        repro_error = str(error)
    res = {"nodes_before": len(graph.nodes), "nodes_after": len(small.nodes),
           "first_failure": first, "checks": len(calls), "minimal_graph": str(small),
           "minimal_inputs": small_inputs, "repro": repro, "repro_error": repro_error}
    if with_jit:  # the real backend compiles the minimal graph right
        from transfuse.compile.minify_check import jit_graph_compiler

        res["jit_failure"] = failure(jit_graph_compiler, small, small_inputs)
    return res


def _summary(res: dict) -> None:
    print(f"planted compiler: {res['first_failure'][:80]}...")
    print(f"minified {res['nodes_before']} nodes to {res['nodes_after']} "
          f"in {res['checks']} checks:")
    print(res["minimal_graph"])
    print(f"repro {res['repro'].name} fails on its own: {res['repro_error'][:80]}...")
    if "jit_failure" in res:
        print(f"tx.jit on the minimal graph: {res['jit_failure'] or 'agrees'}")


if __name__ == "__main__":
    _summary(main())
