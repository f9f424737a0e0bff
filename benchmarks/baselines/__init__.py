"""What users would pick instead of the numba kernels, for the harness to compare.

* `numpy_tick`: the SCORING.md pipeline in vectorised NumPy (no numba), on
  the same column groups as `kernels.tick`.
* `python_tick`: a straightforward per-node Python implementation over a dict
  of node objects.

Both are checked against the kernels in tests/test_baselines.py.
"""
