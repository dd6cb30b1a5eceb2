"""transfuse.nn: a small torch.nn-style module system on NumPy arrays.

Parameters and buffers are plain NumPy arrays held by `Module`s; `Parameter(array)` marks
an array as a parameter when it is assigned to a module attribute. Forwards are written
with traceable operations, so every transform applies, usually through
`functional_call(module, params, args)`.
"""

from . import functional, init, utils
from .containers import ModuleList, Sequential
from .layers import (
    GELU,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
)
from .module import IncompatibleKeys, MissingForwardError, Module, TransfuseAttributeError
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .parameter import Parameter
from .utils import functional_call, replace_all_batch_norm_modules_, stack_module_state

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "Linear", "Conv2d", "Embedding",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU",
    "Identity", "Flatten", "functional", "init", "utils", "functional_call",
    "stack_module_state", "replace_all_batch_norm_modules_", "IncompatibleKeys",
    "MissingForwardError", "TransfuseAttributeError",
]
