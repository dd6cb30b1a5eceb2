"""transfuse: composable function transforms for NumPy programs, compiled by Numba.

    import transfuse as tx
    import transfuse.numpy as tnp
"""

from transfuse.ir.errors import (
    BatchingError,
    CompileError,
    ConcretizationError,
    DTypeError,
    MutationError,
    ShapeError,
    TracerLeakError,
    TransfuseAxisError,
    TransfuseError,
    TransfuseIndexError,
    TransfuseTypeError,
    TransfuseValueError,
    UnsupportedError,
)
from transfuse.ir.tree import (
    register_pytree_node,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_structure,
    tree_unflatten,
)

from . import nn, numpy, random, scipy  # noqa: F401
from ._checkpoint import checkpoint, checkpoint_policies, remat, saved_bytes, saved_residuals
from ._custom import Function, FunctionCtx, custom_jvp, custom_vjp
from ._forward import hessian, jacfwd, jvp, linearize
from ._functionalize import functionalize
from ._jit import jit
from ._reverse import grad, grad_and_value, jacrev, vjp
from ._staging import make_graph
from ._vmap import vmap
from .aot import load
from .nn.utils import functional_call, replace_all_batch_norm_modules_, stack_module_state

__version__ = "0.1.0"

__all__ = [
    "make_graph", "vmap", "tree_map", "tree_flatten", "tree_unflatten", "tree_leaves",
    "tree_structure", "register_pytree_node", "random", "numpy", "TransfuseError",
    "TransfuseTypeError", "TransfuseValueError", "TransfuseIndexError", "TransfuseAxisError",
    "ShapeError", "DTypeError", "ConcretizationError", "UnsupportedError", "TracerLeakError",
    "MutationError", "BatchingError", "CompileError",
    "vjp", "grad", "grad_and_value", "jacrev",
    "jvp", "linearize", "jacfwd", "hessian", "functionalize", "nn", "functional_call",
    "stack_module_state", "replace_all_batch_norm_modules_", "jit", "load",
    "custom_jvp", "custom_vjp", "Function", "FunctionCtx",
    "checkpoint", "remat", "checkpoint_policies", "saved_residuals", "saved_bytes",
]
