"""Triton kernels and their benchmark specs. Families are listed in :mod:`kernels.registry`."""
