"""Neural tangent kernels
======================

The neural tangent kernel (NTK) describes how a network's outputs move together during
training by gradient descent. Its empirical version at parameters `theta`, between inputs
`x1` and `x2`, is the product of the Jacobians of the outputs with respect to the
parameters:

    NTK(x1, x2) = J(x1) @ J(x2)^T,    J(x) = d f(theta, x) / d theta,

a K x K matrix for a network with K outputs. For batches of N1 and N2 inputs we compute
all of them at once: an array of shape (N1, N2, K, K).

This is the transfuse edition of torch.func's "Neural Tangent Kernels" tutorial, on a
small MLP. It computes the kernel two ways, Jacobian contraction and NTK-vector products,
and checks both against a loop.

Run it with `python docs/tutorials/neural_tangent_kernels.py`.
"""

# %% [markdown]
# ## Setup: a small MLP and two batches of inputs
#
# We use float64 so that the symmetry and positive-semidefiniteness checks below are
# tight.

# %%
from __future__ import annotations

import numpy as np

import transfuse as tx
import transfuse.nn as nn
import transfuse.numpy as tnp

N1, N2 = 5, 4
IN, HIDDEN, OUT = 3, 16, 2


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN),
                         nn.Tanh(), nn.Linear(HIDDEN, OUT)).double()


def make_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N1, IN)), rng.standard_normal((N2, IN))


# %% [markdown]
# ## The network as a function of its parameters, for one example
#
# `tx.functional_call` makes the parameters an argument. The model takes a batch, so one
# example is given a batch axis of 1 and the output loses it again.

# %%
def make_fnet_single(model: nn.Module):
    def fnet_single(params: dict, x):
        return tx.functional_call(model, params, (tnp.expand_dims(x, 0),))[0]
    return fnet_single


# %% [markdown]
# ## Method 1: Jacobian contraction
#
# `vmap(jacrev(fnet_single), in_dims=(None, 0))` gives, for each example, the Jacobian of
# its K outputs with respect to every parameter: a dict of arrays of shape
# `(N, K) + parameter.shape`. Flattening the parameter axes and contracting over them
# (`einsum('Naf,Mbf->NMab')`), summed over the parameters, gives the kernel.
#
# `compute='trace'` gives only the trace over the output axes, (N1, N2), which is
# cheaper to store.

# %%
def empirical_ntk_jacobian_contraction(fnet_single, params: dict, x1, x2,
                                       compute: str = "full") -> np.ndarray:
    """The NTK by contracting per-example parameter Jacobians: (N1, N2, K, K) or (N1, N2)."""
    jacobian_fn = tx.vmap(tx.jacrev(fnet_single), in_dims=(None, 0))
    return contract(jacobian_fn(params, x1), jacobian_fn(params, x2), compute)


def contract(jac1: dict, jac2: dict, compute: str = "full") -> np.ndarray:
    """Sum over parameters of einsum('Naf,Mbf->NMab') of the flattened Jacobians."""
    pattern = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM"}[compute]
    blocks = []
    for name in jac1:
        j1 = jac1[name].reshape(jac1[name].shape[:2] + (-1,))
        j2 = jac2[name].reshape(jac2[name].shape[:2] + (-1,))
        blocks.append(np.einsum(pattern, j1, j2))
    return np.sum(blocks, axis=0)


# %% [markdown]
# ## Method 2: NTK-vector products
#
# The kernel can also be built without ever storing a Jacobian: for a vector `v` over the
# outputs of `x1`, `J(x2) @ (J(x1)^T v)` is a vector-Jacobian product (`tx.vjp`) followed
# by a Jacobian-vector product (`tx.jvp`). Doing it for each basis vector `v` (a `vmap`)
# gives one K x K block, and two more `vmap`s run it over all pairs of examples. This is
# cheaper in memory when the parameters are many and the outputs few. It also shows the
# transforms nesting: vmap(vmap(vmap(jvp after vjp))).

# %%
def empirical_ntk_ntk_vps(fnet_single, params: dict, x1, x2) -> np.ndarray:
    """The NTK by NTK-vector products: (N1, N2, K, K)."""
    def get_ntk(a, b):
        def at_a(params):
            return fnet_single(params, a)

        def at_b(params):
            return fnet_single(params, b)

        output, vjp_fn = tx.vjp(at_a, params)

        def ntk_column(vec):
            (pulled_back,) = vjp_fn(vec)                        # J(a)^T vec
            return tx.jvp(at_b, (params,), (pulled_back,))[1]   # J(b) J(a)^T vec

        basis = tnp.eye(output.shape[0], dtype=output.dtype)
        # Row i is J(b) J(a)^T e_i, the transpose of row i of J(a) J(b)^T: the block.
        return tx.vmap(ntk_column)(basis)

    return tx.vmap(tx.vmap(get_ntk, in_dims=(None, 0)), in_dims=(0, None))(x1, x2)


# %% [markdown]
# ## The baseline: a loop over pairs of examples
#
# One flat Jacobian per example (all parameters concatenated into one axis), and one
# matrix product per pair.

# %%
def flat_jacobian(fnet_single, params: dict, x) -> np.ndarray:
    """d fnet_single(params, x) / d params, as a (K, number of parameters) matrix."""
    jac = tx.jacrev(fnet_single)(params, x)
    return np.concatenate([jac[name].reshape(jac[name].shape[0], -1) for name in params],
                          axis=1)


def empirical_ntk_loop(fnet_single, params: dict, x1, x2) -> np.ndarray:
    jac1 = [flat_jacobian(fnet_single, params, a) for a in x1]
    jac2 = [flat_jacobian(fnet_single, params, b) for b in x2]
    return np.array([[j1 @ j2.T for j2 in jac2] for j1 in jac1])


# %% [markdown]
# ## Checks
#
# - Both methods agree with the loop.
# - The kernel of a batch with itself, reshaped to a (N*K, N*K) matrix, is a Gram matrix
#   `J J^T`: symmetric (`K[n, m, a, b] == K[m, n, b, a]`) and positive semidefinite.

# %%
def gram_properties(kernel: np.ndarray) -> dict:
    """Symmetry error and smallest eigenvalue of a (N, N, K, K) kernel as a matrix."""
    n, _, k, _ = kernel.shape
    matrix = kernel.transpose(0, 2, 1, 3).reshape(n * k, n * k)
    return {
        "symmetry_error": float(np.max(np.abs(matrix - matrix.T))),
        "min_eigenvalue": float(np.linalg.eigvalsh(matrix).min()),
        "max_eigenvalue": float(np.linalg.eigvalsh(matrix).max()),
    }


def main(with_jit: bool = True) -> dict:
    """Run the tutorial; return its results. with_jit=False skips the tx.jit section."""
    nn.init.seed(0)
    model = make_model()
    params = dict(model.named_parameters())
    fnet_single = make_fnet_single(model)
    x1, x2 = make_inputs()

    contraction = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2)
    ntk_vps = empirical_ntk_ntk_vps(fnet_single, params, x1, x2)
    loop = empirical_ntk_loop(fnet_single, params, x1, x2)
    self_kernel = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x1)
    results = {
        "model": model, "params": params, "fnet_single": fnet_single, "x1": x1, "x2": x2,
        "ntk_jacobian_contraction": contraction,
        "ntk_vps": ntk_vps,
        "ntk_loop": loop,
        "ntk_trace": empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2,
                                                        compute="trace"),
        "self_kernel": self_kernel,
        "self_kernel_properties": gram_properties(self_kernel),
        "max_abs_diff_contraction": float(np.max(np.abs(contraction - loop))),
        "max_abs_diff_ntk_vps": float(np.max(np.abs(ntk_vps - loop))),
    }
    if with_jit:
        results["jit_max_abs_diff"] = jit_max_abs_diff(fnet_single, params, x1, x2, contraction)
    return results


# %% [markdown]
# ## With `tx.jit`
#
# The per-example Jacobian function is an ordinary function, so `tx.jit` compiles it
# into fused kernels; the kernel it gives is the same (to float rounding). The first
# call traces and compiles (seconds: one Numba compile per fused kernel); later calls
# with the same shapes and dtypes reuse the compiled code.

# %%
def jit_max_abs_diff(fnet_single, params: dict, x1, x2, expected) -> float:
    """How far the NTK from jit(vmap(jacrev(fnet_single))) is from the uncompiled one."""
    compiled = tx.jit(tx.vmap(tx.jacrev(fnet_single), in_dims=(None, 0)))
    kernel = contract(compiled(params, x1), compiled(params, x2))
    return float(np.max(np.abs(kernel - expected)))


def _summary(results: dict) -> None:
    print(f"NTK shape (N1, N2, K, K): {results['ntk_jacobian_contraction'].shape}")
    print(f"Jacobian contraction vs loop: max |difference| = "
          f"{results['max_abs_diff_contraction']:.2e}")
    print(f"NTK-vector products vs loop: max |difference| = "
          f"{results['max_abs_diff_ntk_vps']:.2e}")
    props = results["self_kernel_properties"]
    print(f"NTK(x1, x1) as a matrix: symmetric to {props['symmetry_error']:.1e}, "
          f"eigenvalues in [{props['min_eigenvalue']:.2e}, {props['max_eigenvalue']:.2e}]")
    if "jit_max_abs_diff" in results:
        print(f"jit(vmap(jacrev)) NTK vs uncompiled: max |difference| = "
              f"{results['jit_max_abs_diff']:.2e}")


if __name__ == "__main__":
    _summary(main())
