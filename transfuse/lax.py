"""transfuse.lax: the primitive-level operations (conv, dot_general, erf, ...), as in jax.lax."""

from transfuse.ir.lax import *  # noqa: F401,F403
from transfuse.ir.lax import conv_general_dilated, dot_general, erf, logistic  # noqa: F401
