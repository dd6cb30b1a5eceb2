"""A readable printer for graphs: one line a node, like a jaxpr."""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import Graph, Var, short_dtype, subgraphs


def format_graph(graph: Graph, *, source: bool = True, indent: int = 0) -> str:
    """Text for a graph: `%3:f32[64,5] = tanh %2   # file.py:12`, one line a node."""
    names: dict[Var, str] = {}

    def define(v: Var) -> str:
        names[v] = f"%{len(names)}"
        return f"{names[v]}:{v.aval}"

    def use(v: Var) -> str:
        if v in graph.consts and graph.consts[v].ndim == 0:
            return f"{_scalar(graph.consts[v])}:{short_dtype(v.aval.dtype)}"
        return names[v]

    pad = " " * indent
    ins = [define(v) for v in graph.inputs]
    n_implicit = graph.num_captures + int(graph.has_rng)
    explicit, implicit = ins[:len(ins) - n_implicit], ins[len(ins) - n_implicit:]
    head = ", ".join(explicit) + (" ; " + ", ".join(implicit) if implicit else "")
    lines = [f"{pad}graph {graph.name}({head}) {{"]
    big_consts = [v for v, a in graph.consts.items() if a.ndim > 0]
    for v in big_consts:
        lines.append(f"{pad}  {define(v)} = const")
    for node in graph.nodes:
        outs = ", ".join(define(v) for v in node.outputs)
        params = _format_params(node.params, indent + 4)
        args = ", ".join(use(v) for v in node.inputs)
        text = f"{outs} = {node.prim.name}{params} {args}".strip()
        if not node.outputs:
            text = f"{node.prim.name}{params} {args}"
        if source and node.source is not None:
            text = f"{text:<56} # {node.source.short()}"
        lines.append(f"{pad}  {text}")
        for sub in subgraphs(node):
            lines.append(format_graph(sub, source=source, indent=indent + 4))
    lines.append(f"{pad}  return {', '.join(use(v) for v in graph.outputs)}")
    lines.append(f"{pad}}}")
    return "\n".join(lines)


def _scalar(a: np.ndarray) -> str:
    v = a.item()
    return repr(v)


def _format_params(params: dict[str, Any], indent: int) -> str:
    shown = []
    for k, v in params.items():
        if isinstance(v, Graph):
            shown.append(f"{k}={v.name}")
        elif isinstance(v, tuple) and v and all(isinstance(g, Graph) for g in v):
            shown.append(f"{k}=({', '.join(g.name for g in v)})")
        elif isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
            shown.append(f"{k}={short_dtype(v)}")
        else:
            shown.append(f"{k}={v}")
    return f"[{', '.join(shown)}]" if shown else ""
