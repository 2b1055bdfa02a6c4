"""Decode-step estimate for Llama-3 layers from measured points: time per token vs batch.

One decoder layer at batch B and context C = the seven projections (q, k, v, o, gate, up, down;
y = x·Wᵀ, W [N, K]) + decode attention over C cached tokens. Norms, RoPE, residuals, sampling and
the LM head are left out (small at these sizes; not measured). Each projection's time comes from
the fitted sweep of its shape (gemv or gemm rows matched by label, else by (N, K); k and v share a
shape and the suites measure it once, as k), evaluated at B between measured batches — never
outside them. The faster of gemv and gemm is taken, as a serving engine would dispatch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.sweeps import SweepFit
from analysis.roofline import predicted_time
from kernels.models import Model


def layer_cost(model: Model, batch: int, context: int, itemsize: int = 2) -> tuple[float, float, float]:
    """(flops, bytes, weight bytes) of one layer's decode step: minimal traffic, fp16/bf16 by default."""
    flops = nbytes = weights = 0.0
    for n, k in model.projections().values():
        flops += 2.0 * batch * n * k
        weights += itemsize * n * k
        nbytes += itemsize * (n * k + batch * (n + k))
    flops += 4.0 * batch * model.heads * context * model.head_dim  # q·Kᵀ and p·V
    nbytes += itemsize * batch * (2 * model.kv_heads * context + 2 * model.heads) * model.head_dim
    return flops, nbytes, weights

# The source articles' batch table for a 70B-class fp16 layer: batch -> (FLOP/byte, utilisation).
ARTICLE_TABLE = ((1, 4.0, 0.05), (8, 32.0, 0.30), (32, 128.0, 0.65), (128, 512.0, 0.85))
# H200 vs H100: datasheet bandwidth ratio, and MLPerf Inference v4.1 Llama-2-70B per-GPU tokens/s
# (H200 3,913 offline / 3,654 server vs H100 3,066 / 2,701).
BANDWIDTH_RATIO_H200_H100 = 4.8 / 3.35
MLPERF_RATIO_H200_H100 = (3913 / 3066, 3654 / 2701)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LINEAR_KERNELS = ("gemv", "gemm")


def sweep_time(sweep: SweepFit, batch: int) -> float:
    """Time of a sweep at a batch inside its measured range, NaN outside it.

    The fit where it covers the batch; otherwise (no usable fit, or points left out of it because
    they fit in L2 — measured with a cold L2 all the same) log-log interpolation of the measured medians.
    """
    if sweep.batch is None or sweep.rows.empty:
        return float("nan")
    fit, used = sweep.fit, sweep.used
    fitted = (np.isfinite(fit.t0) and (np.isfinite(fit.bandwidth) or np.isfinite(fit.peak))
              and np.all(np.isfinite(sweep.cost_in_batch)))
    if fitted and float(used[sweep.batch].min()) <= batch <= float(used[sweep.batch].max()):
        return float(sweep.predict_at(batch))
    medians = sweep.rows.groupby(sweep.batch)["median_s"].median()
    batches = medians.index.astype(float)
    if not batches.min() <= batch <= batches.max():
        return float("nan")
    return float(np.exp(np.interp(np.log(batch), np.log(batches), np.log(medians.values))))


def _axis(sweep: SweepFit, name: str):
    values = sweep.rows[name].dropna().unique() if name in sweep.rows else []
    return values[0] if len(values) == 1 else None


def projection_sweeps(sweeps: list[SweepFit], model: Model, projection: str, impl: str, dtype: str):
    label = f"{model.name}.{'k' if projection == 'v' else projection}"
    n, k = model.projections()[projection]
    found = []
    for sweep in sweeps:
        if sweep.kernel not in LINEAR_KERNELS or sweep.impl != impl or sweep.dtype != dtype:
            continue
        if sweep.shape == label or (_axis(sweep, "N") == n and _axis(sweep, "K") == k):
            found.append(sweep)
    return found


def attention_sweeps(sweeps: list[SweepFit], model: Model, context: int, impl: str, dtype: str):
    wanted = {"heads": model.heads, "kv_heads": model.kv_heads, "head_dim": model.head_dim, "context": context}
    return [s for s in sweeps if s.kernel == "attn_decode" and s.impl == impl and s.dtype == dtype
            and s.batch == "batch" and all(_axis(s, a) == v for a, v in wanted.items())]


def estimate(sweeps: list[SweepFit], model: Model, impl: str, dtype: str, context: int,
             peak: float = float("nan"), datasheet: tuple[float, float] | None = None,
             batches=DECODE_BATCHES) -> pd.DataFrame:
    """Per batch: layer time from the measured sweeps, tokens/s, latency, FLOP/byte, utilisation.

    ``linear_*`` covers the seven projections alone (what the articles' batch table describes);
    ``layer_us`` adds attention; ``step_ms`` = layers × layer (per-token latency of a decode step).

    ``peak`` (FLOP/s) is the tensor roof utilisation is quoted against; ``datasheet`` = (peak, BW)
    adds the datasheet roofline's lower bound on the step time. Missing parts are listed, and
    their step time stays NaN: a partial sum is never shown as an estimate.
    """
    itemsize = 4 if dtype == "fp32" else 1 if dtype == "fp8" else 2
    attention_fits = attention_sweeps(sweeps, model, context, impl, dtype)
    linear_fits = {p: projection_sweeps(sweeps, model, p, impl, dtype) for p in model.projections()}
    rows = []
    for batch in batches:
        flops, nbytes, weights = layer_cost(model, batch, context, itemsize)
        attention_flops = 4.0 * batch * model.heads * context * model.head_dim
        linear, used, missing = 0.0, [], []
        for projection, found in linear_fits.items():
            times = [(t, s.kernel) for s in found if np.isfinite(t := sweep_time(s, batch))]
            if times:
                fastest, kernel = min(times)
                linear += fastest
                used.append(f"{projection}:{kernel}")
            else:
                missing.append(projection)
        linear = float("nan") if missing else linear
        attention = min((t for t in (sweep_time(s, batch) for s in attention_fits) if np.isfinite(t)),
                        default=float("nan"))
        if np.isfinite(attention):
            used.append("attn")
        else:
            missing.append("attention")
        layer = linear + attention  # NaN when anything is missing: a partial sum is never an estimate
        step = layer * model.layers
        bound = float("nan")
        if datasheet is not None and all(np.isfinite(datasheet)):
            bound = float(predicted_time(flops, nbytes, *datasheet)) * model.layers
        linear_flops = flops - attention_flops
        rows.append(dict(
            model=model.name, impl=impl, dtype=dtype, context=context, batch=batch,
            intensity=flops / nbytes, weight_intensity=2.0 * batch / itemsize,
            linear_us=linear * 1e6, linear_utilisation=linear_flops / linear / peak if peak > 0 else float("nan"),
            attention_us=attention * 1e6, layer_us=layer * 1e6, step_ms=step * 1e3, tokens_s=batch / step,
            tflops=flops / layer / 1e12, utilisation=flops / layer / peak if peak > 0 else float("nan"),
            datasheet_step_ms=bound * 1e3, parts=" ".join(used), missing=" ".join(missing)))
    return pd.DataFrame(rows)


def device_ratio(slow: pd.DataFrame, fast: pd.DataFrame) -> pd.DataFrame:
    """tokens/s of ``fast`` over ``slow`` per (model, impl, batch), beside the bandwidth and MLPerf ratios."""
    keys = ["model", "impl", "dtype", "context", "batch"]
    merged = slow[keys + ["tokens_s"]].merge(fast[keys + ["tokens_s"]], on=keys, suffixes=("_slow", "_fast"))
    merged["ratio"] = merged["tokens_s_fast"] / merged["tokens_s_slow"]
    return merged
