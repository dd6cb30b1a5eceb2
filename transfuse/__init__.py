"""transfuse: composable function transforms for NumPy programs, compiled by Numba."""
