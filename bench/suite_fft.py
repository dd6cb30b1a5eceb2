"""fft: a circular convolution through the FFT, and its loss's gradient w.r.t. the filter.

- conv-grad: 64 signals of 4096 points (float32) convolved with one learned 4096-point
  filter by `rfft` / `irfft`; the value of the mean squared error against targets and its
  gradient with respect to the filter (`grad_and_value`). NumPy baseline: the closed-form
  gradient, itself three FFTs (the adjoint of a circular convolution is a circular
  correlation).
"""

from __future__ import annotations

import numpy as np

from transfuse.bench.core import Case, jax_system, numpy_system, torch_system

NAME = "fft"


def conv_loss(kernel: np.ndarray, signals: np.ndarray, targets: np.ndarray):
    """Mean squared error of the circular convolutions of every signal with `kernel`."""
    n = signals.shape[-1]
    spectrum = np.fft.rfft(signals, axis=-1) * np.fft.rfft(kernel, n=n)
    filtered = np.fft.irfft(spectrum, n=n, axis=-1)
    return np.mean((filtered - targets) ** 2)


def conv_inputs(quick: bool) -> tuple:
    """(kernel (n,), signals (batch, n), targets (batch, n)), float32."""
    batch, n = (8, 256) if quick else (64, 4096)
    rng = np.random.default_rng(16)
    kernel = rng.standard_normal(n, dtype=np.float32) / np.float32(n)
    signals = rng.standard_normal((batch, n), dtype=np.float32)
    return kernel, signals, rng.standard_normal((batch, n), dtype=np.float32)


def numpy_conv_grad(kernel, signals, targets):
    """(gradient, loss) in closed form: the gradient correlates the residuals with the signals."""
    n = signals.shape[-1]
    signal_spectra = np.fft.rfft(signals, axis=-1)
    filtered = np.fft.irfft(signal_spectra * np.fft.rfft(kernel), n=n, axis=-1)
    residual = filtered - targets
    loss = np.mean(residual ** 2)
    weight = np.float32(2.0 / residual.size)
    correlation = np.conj(signal_spectra) * np.fft.rfft(residual, axis=-1)
    grad = weight * np.fft.irfft(np.sum(correlation, axis=0), n=n)
    return grad.astype(np.float32), np.float32(loss)


def _jax_conv_grad(jax, jnp):
    def loss(kernel, signals, targets):
        n = signals.shape[-1]
        spectrum = jnp.fft.rfft(signals, axis=-1) * jnp.fft.rfft(kernel, n=n)
        return jnp.mean((jnp.fft.irfft(spectrum, n=n, axis=-1) - targets) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    return lambda *args: tuple(reversed(value_and_grad(*args)))


def _torch_conv_grad(torch):
    from torch.func import grad_and_value

    def loss(kernel, signals, targets):
        n = signals.shape[-1]
        spectrum = torch.fft.rfft(signals, dim=-1) * torch.fft.rfft(kernel, n=n)
        return torch.mean((torch.fft.irfft(spectrum, n=n, dim=-1) - targets) ** 2)

    return grad_and_value(loss)


def cases(quick: bool) -> list[Case]:
    batch, n = (8, 256) if quick else (64, 4096)
    return [Case(
        NAME, "conv-grad",
        f"rfft/irfft circular convolution of {batch} signals of {n} points with a learned "
        "filter: MSE and its gradient w.r.t. the filter, float32",
        lambda: conv_inputs(quick), transform=lambda tx: tx.grad_and_value(conv_loss),
        needs=("grad_and_value",), rtol=2e-3, atol=1e-6,
        baselines={
            "numpy": numpy_system(numpy_conv_grad),
            "jax": jax_system(_jax_conv_grad),
            "torch": torch_system(_torch_conv_grad),
        })]
