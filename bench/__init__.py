"""Sweeps, timing and result files: the only package that touches the GPU."""
