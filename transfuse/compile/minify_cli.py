"""`transfuse minify MODULE:FUNCTION --signature ...`: find, shrink and write down a miscompile.

The command traces the function on seeded random arguments of the signature, compiles the
graph with jit and compares with the reference interpreter (or runs `--check
MODULE:FUNCTION`, a `check(graph, inputs)` returning a description of the failure, or
None); when it fails, the minifier shrinks the graph (transfuse/compile/minifier.py) and a
repro script is written: the minimal graph and its inputs pickled inside it (the graph's
text in its docstring, to read), the check, and an assertion that fails while the bug is
there.

    transfuse minify mypkg.model:step --signature "f32[64,784],f32[784,10]" --out repro.py
    python repro.py      # AssertionError: output 0: values differ ...
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transfuse.ir.core import Aval, Graph
from transfuse.ir.errors import TransfuseValueError

from .minifier import minifier
from .minify_check import failure, jit_graph_compiler, kind_of

Check = Callable[[Graph, list], "str | None"]


def sample_inputs(avals: Sequence[Aval], seed: int = 0) -> list[np.ndarray]:
    """Seeded random arrays of the avals: normal floats, small integers, random booleans."""
    rng = np.random.default_rng(seed)
    out = []
    for a in avals:
        kind = a.dtype.kind
        if kind == "f":
            x = rng.standard_normal(a.shape)
        elif kind == "c":
            x = rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape)
        elif kind == "b":
            x = rng.random(a.shape) < 0.5
        else:
            x = rng.integers(0 if kind == "u" else -5, 6, a.shape)
        out.append(np.asarray(x, dtype=a.dtype))
    return out


def jit_check(graph: Graph, inputs: list) -> str | None:
    """The default check: jit's outputs against the interpreter's, or jit raising."""
    return failure(jit_graph_compiler, graph, inputs)


def minify(graph: Graph, inputs: Sequence[Any], check: Check = jit_check, *,
           max_calls: int = 300) -> tuple[Graph, list, str] | None:
    """(minimal graph, its inputs, its failure) when check fails on graph, else None."""
    first = _describe(check(graph, list(inputs)))
    if first is None:
        return None
    kind = kind_of(first)

    def fails(g: Graph, xs: list) -> bool:
        why = _describe(check(g, xs))
        return why is not None and kind_of(why) == kind

    small, small_inputs = minifier(graph, inputs, fails, max_calls=max_calls)
    return small, small_inputs, _describe(check(small, small_inputs)) or first


def _describe(result: Any) -> str | None:
    """A check's result as a description: a bool True is 'check failed'."""
    if result is None or result is False:
        return None
    return "check failed" if result is True else str(result)


def write_repro(path: str | Path, graph: Graph, inputs: Sequence[Any], why: str,
                check: str | None = None) -> Path:
    """A script that rebuilds graph and inputs, runs the check and fails while it fails."""
    blob = base64.b64encode(pickle.dumps((graph, [np.asarray(x) for x in inputs]))).decode()
    lines = [blob[i:i + 88] for i in range(0, len(blob), 88)]
    if check is None:
        check_code = ("from transfuse.compile.minify_check import failure, "
                      "jit_graph_compiler\n\n\ndef check(graph, inputs):\n"
                      "    return failure(jit_graph_compiler, graph, inputs)\n")
    else:
        module, _, name = check.partition(":")
        check_code = (f"sys.path.insert(0, {_import_root(module)!r})\n"
                      f"from {module} import {name} as check  # noqa: E402\n")
    text = _REPRO.format(graph=_indent(str(graph)), why=why.replace('"""', "'''"),
                         check_code=check_code, blob="\n".join(f'    "{ln}"' for ln in lines))
    out = Path(path)
    out.write_text(text)
    return out


def _import_root(module: str) -> str:
    """The folder on sys.path from which `module` imports (the repro may run elsewhere)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # __main__ of a script has no spec
        spec = None
    if spec is None or spec.origin is None:
        return str(Path.cwd())
    path = Path(spec.origin)
    up = module.count(".") + (2 if path.name == "__init__.py" else 1)
    return str(path.parents[up - 1])


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.replace('"""', "'''").splitlines())


_REPRO = '''"""A miscompile found by `transfuse minify`: run with python, it fails while the bug is.

The graph:

{graph}

Failure when found: {why}
"""
import base64
import pickle
import sys

{check_code}
GRAPH, INPUTS = pickle.loads(base64.b64decode(
{blob}
))

if __name__ == "__main__":
    why = check(GRAPH, INPUTS)
    if why is True:
        why = "check failed"
    assert not why, why
    print("does not fail any more")
'''


def _resolve(target: str) -> Callable:
    from transfuse.aot import _resolve as resolve

    return resolve(target)


def main(argv: list[str] | None = None) -> int:
    """`transfuse minify`: 0 when the check passes, 1 when a repro was written."""
    from transfuse._staging import stage
    from transfuse.aot import parse_signature

    parser = argparse.ArgumentParser(
        prog="transfuse minify",
        description="Shrink a miscompile to a minimal graph and write a repro script.")
    parser.add_argument("target", help="MODULE:FUNCTION (a plain function of arrays)")
    parser.add_argument("--signature", required=True, help="argument arrays: 'f32[3,4],f64[]'")
    parser.add_argument("--check", default=None,
                        help="MODULE:FUNCTION check(graph, inputs) -> failure text or None "
                             "(default: jit against the reference interpreter)")
    parser.add_argument("--out", default="minified_repro.py", help="the repro script to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--max-calls", type=int, default=300,
                        help="at most this many checks while minifying")
    args = parser.parse_args(argv)
    func = _resolve(args.target)  # a jitted function traces through its function
    inputs = sample_inputs(parse_signature(args.signature), args.seed)
    graph = stage(func, inputs).graph
    if graph.num_captures or graph.has_rng:
        raise TransfuseValueError("transfuse minify: the function draws random numbers or "
                                  "captures traced values; minify a pure function of arrays")
    check = _resolve(args.check) if args.check else jit_check
    found = minify(graph, inputs, check, max_calls=args.max_calls)
    if found is None:
        print(f"{args.target} ({args.signature}): the check passes; nothing to minify")
        return 0
    small, small_inputs, why = found
    out = write_repro(args.out, small, small_inputs, why, args.check)
    print(f"{args.target}: {why}\nminimal graph ({len(small.nodes)} of {len(graph.nodes)} "
          f"nodes):\n{small}\nwrote {out}; run it with python")
    return 1


__all__ = ["main", "minify", "write_repro", "sample_inputs", "jit_check"]
