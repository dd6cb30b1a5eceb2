"""A differential fuzzer for transfuse (docs/reliability.md, "The differential fuzzer").

- programs.py: random NumPy programs, written once against a namespace `xp` (NumPy or
  jax.numpy) and a float dtype `F`, with what each value holds (shape, dtype, value range);
- oracles.py: each mode (eager, jit, grad, jvp, vmap, functionalize and their nestings)
  run by transfuse and by an oracle (NumPy, a higher-precision twin, JAX, finite
  differences, a Python loop), and the comparison;
- complex_ops.py: complex programs (complex64/complex128 mixed with real values, domains
  kept off branch cuts and poles), checked against a complex128 (clongdouble) rerun, and in
  complex128 for jvp (differences along complex directions), vjp (the bilinear transpose:
  Re<ct, jvp(t)> == Re<vjp(ct), t>) and grad of a real loss (JAX's conjugate convention);
- shrink.py: a failing case made smaller, line by line;
- __main__.py: `python -m tests.fuzz --minutes N [--seed S]`, a campaign;
- test_fuzz.py: the fixed set of cases CI runs; test_findings.py: what the fuzzer found.
"""
