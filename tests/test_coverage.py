"""Every primitive has a rule in every transform's table and in the CPU and CUDA backends.

A missing rule is found here, by CI, not by a user.
"""

from __future__ import annotations

import importlib

import pytest
from transfuse.ir.primitives import PRIMITIVES

# `prepare` (compiler/functionalize.py) removes these before any transform or lowering runs.
REMOVED_BEFORE_TRANSFORMS = {"view_slice", "view_reshape", "view_transpose", "assign"}
# Created by the fusion pass, after every transform has run: only the backend sees them.
BACKEND_ONLY = {"fused"}
# jit inlines sub-graph calls before fusion (compiler/fusion.py: inline_calls).
INLINED_BEFORE_LOWERING = {"call"}

TABLES = [
    ("compiler.jvp", "JVP_RULES", "forward-mode (jvp)"),
    ("compiler.vjp", "VJP_RULES", "reverse-mode (vjp)"),
    ("compiler.batching", "BATCH_RULES", "batching (vmap)"),
    ("compiler.lower_cpu", "LOWERING_RULES", "CPU lowering"),
    ("compiler.lower_cuda", "CUDA_LOWERING_RULES", "CUDA lowering"),
]
BACKENDS = ("LOWERING_RULES", "CUDA_LOWERING_RULES")


def _table(module: str, name: str) -> dict:
    return getattr(importlib.import_module(f"transfuse.{module}"), name)


@pytest.mark.parametrize("module,name,what", TABLES, ids=[t[1] for t in TABLES])
def test_every_primitive_has_a_rule(module, name, what):
    table = _table(module, name)
    # Import every table first so primitives defined by the compiler (fused) are known.
    for m, n, _ in TABLES:
        _table(m, n)
    exempt = set(REMOVED_BEFORE_TRANSFORMS)
    exempt |= INLINED_BEFORE_LOWERING if name in BACKENDS else BACKEND_ONLY
    names_with_rules = {getattr(p, "name", p) for p in table}
    missing = sorted(n for n in PRIMITIVES if n not in exempt and n not in names_with_rules)
    assert not missing, f"primitives without a {what} rule: {missing}"


def test_tables_are_keyed_by_registered_primitives():
    for module, name, _ in TABLES:
        for key in _table(module, name):
            key_name = getattr(key, "name", key)
            assert key_name in PRIMITIVES, f"{name} has a rule for unknown primitive {key!r}"
            if not isinstance(key, str):
                assert PRIMITIVES[key_name] is key, f"{name}: stale Primitive object {key!r}"


def test_every_primitive_has_a_reference_implementation_and_doc():
    for prim in PRIMITIVES.values():
        assert callable(prim.impl) and callable(prim.shape_rule), prim
        assert prim.doc, f"{prim.name} has no one-line doc"
