"""The benchmark suites of `transfuse bench`, importable as transfuse.bench.suites.

Each `suite_<name>.py` module defines NAME and `cases(quick: bool) -> list[Case]`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Suite name -> module, in the order `transfuse bench` runs them.
SUITES = {
    "elementwise": "suite_elementwise",
    "softmax": "suite_softmax",
    "layernorm": "suite_layernorm",
    "per-sample-grads": "suite_per_sample_grads",
    "ensembling": "suite_ensembling",
    "jacobians": "suite_jacobians",
    "hessian": "suite_hessian",
    "maml": "suite_maml",
    "ntk": "suite_ntk",
    "linalg": "suite_linalg",
    "fft": "suite_fft",
    "sorting": "suite_sorting",
    "control": "suite_control_flow",
    "checkpoint": "suite_checkpoint",
    "aot": "suite_aot",
    "dispatch": "suite_dispatch",
    "compile": "suite_compile",
    "dask": "suite_dask",
}


def load_suite(name: str) -> ModuleType:
    """The module of suite `name` (a key of SUITES)."""
    return importlib.import_module(f"{__name__}.{SUITES[name]}")
