"""transfuse.lax: the primitive-level operations (conv, dot_general, erf, ...), as in jax.lax."""

from transfuse._control import cond, fori_loop, map, scan, switch, while_loop  # noqa: F401,A004
from transfuse._custom import stop_gradient  # noqa: F401
from transfuse.ir.lax import *  # noqa: F401,F403
from transfuse.ir.lax import conv_general_dilated, dot_general, erf, logistic  # noqa: F401
