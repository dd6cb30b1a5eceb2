"""transfuse.compile: functorch.compile's API on transfuse graphs (AOT Autograd, partitioners,
compilers, the minifier)."""
from .aot import aot_function, aot_module, memory_efficient_fusion, saved_bytes
from .compilers import jit_compile, nop, print_compile
from .partition import default_partition, min_cut_rematerialization_partition

__all__ = [
    "aot_function", "aot_module", "memory_efficient_fusion", "saved_bytes",
    "nop", "print_compile", "jit_compile",
    "default_partition", "min_cut_rematerialization_partition",
    "minifier",
]

try:
    from .minifier import minifier  # noqa: E402,F401 (the minify helper's module)
except ImportError:  # the minify helper's module is not in yet
    pass
