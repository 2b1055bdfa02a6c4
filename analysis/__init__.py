"""Empirical rooflines from result files: device datasheets, measured ceilings, per-kernel fits,
plots, a Markdown report and a decode-step estimate. Reads CSV + JSON only: no GPU, no torch of its
own (``bench.results`` is the one schema reader it uses)."""
