"""Signature caches, kernel loading and launch, ahead-of-time artefacts (transfuse.runtime)."""

import os

# Numba's parallel regions run on OpenMP threads, BLAS calls on OpenBLAS's own threads. By
# default GNU OpenMP's idle threads spin after a region, taking the cores a following BLAS
# call needs (and OpenBLAS's spinning threads do the same to the next region): a vmapped
# MLP ran 3x slower than NumPy on 2 cores. Passive waiting puts idle threads to sleep at
# once. It must be set before the OpenMP library loads (at Numba's first parallel region);
# a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
