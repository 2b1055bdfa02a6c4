"""Fitting t = t0 + max(bytes/BW_eff, flops/P_eff) to a kernel's measured points.

The fit minimises the relative error Σ((t̂ − t)/t)² so a 5 µs point weighs as much as a 50 ms one.
For fixed (BW, P) a point is memory-bound exactly when its intensity is below the ridge P/BW, so
the max() splits the points at an intensity threshold. We try every threshold between the sorted
intensities; for each split the model is linear in (t0, 1/BW, 1/P) and solved exactly with bounds
(non-negative, and 1/BW, 1/P no lower than physical caps allow); the best split is then re-split at
its own ridge until stable. The two-branch model competes with bandwidth-only and compute-only
models by BIC, so a branch the points do not reach is reported as unidentifiable instead of being
invented. A few Huber-weighted passes (IRLS) keep a stray sample from steering the fit; their noise scale is
set once from the plain fit, so it cannot collapse onto a subset of the points. The ± (see
``_standard_errors``) is Huber's covariance with every free parameter's column, bounds or not, widened by
Student's t for few points: over many synthetic seeds the truth lies inside ±2σ in ≈ 95 % of fits
(tests/test_fit_coverage.py). Fewer than MIN_POINTS points, or a fit whose implied figures the physical caps
forbid, is refused (``Fit.refused`` says why) rather than reported.
Only numpy: scipy is not installed everywhere this runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from analysis.markdown import quantity

HUBER_K = 1.345  # Huber's tuning constant (95 % efficiency under Gaussian noise)
IRLS_PASSES = 4
ERROR_CLIP = 2.0  # the error's noise scale clips residuals only beyond this many Huber cutoffs (≈ 2.7σ)
MIN_BRANCH = 2  # points each branch needs before the two-branch model may be chosen (one point is fitted exactly)
SEPARABLE_SPAN = 2.0  # a branch's bytes or FLOPs must vary this much for t0 to differ from a constant offset
MIN_POINTS = 4  # three parameters and one degree of freedom to judge them: fewer points are refused
POOR_RSE = 0.25  # relative standard error above which a parameter is reported as poorly determined


@dataclass(frozen=True)
class Fit:
    """Fitted effective roof of one sweep. NaN marks a parameter the points cannot determine."""

    bandwidth: float  # BW_eff, bytes/s
    peak: float  # P_eff, FLOP/s
    t0: float  # fixed cost per call, s
    bandwidth_rse: float  # relative standard errors (NaN when not estimable)
    peak_rse: float
    t0_se: float  # absolute standard error of t0, s
    mape: float  # mean |t̂ − t| / t over the fitted points
    residuals: tuple[float, ...]  # (t̂ − t)/t per usable point, input order
    n_points: int
    n_memory: int  # points on the bandwidth branch
    n_compute: int  # points on the compute branch
    peak_lower_bound: float = float("nan")  # when P_eff is unidentifiable: the points only bound it from below
    bandwidth_lower_bound: float = float("nan")
    t0_separable: bool = True  # a branch's bytes (or FLOPs) span ≥ SEPARABLE_SPAN×
    notes: tuple[str, ...] = ()
    refused: str = ""  # why no fit is reported (too few points, figures beyond the physical roof); "" for a fit

    @property
    def fitted(self) -> bool:
        return not self.refused

    @property
    def ridge(self) -> float:
        return self.peak / self.bandwidth

    @property
    def t0_determined(self) -> bool:
        """False when t0 sits at a bound (0, or held) or its standard error exceeds POOR_RSE of it."""
        return bool(np.isfinite(self.t0_se) and self.t0 > 0 and self.t0_se <= POOR_RSE * self.t0)

    @property
    def bandwidth_determined(self) -> bool:
        """False when memory-bound points exist but BW_eff is missing or loose (t0 and BW traded off)."""
        if self.n_memory == 0:
            return True
        return bool(np.isfinite(self.bandwidth) and np.isfinite(self.bandwidth_rse) and self.bandwidth_rse <= POOR_RSE)

    def predict(self, flops, nbytes):
        """Model time for points of given flops and bytes; an unidentified peak counts as no compute limit."""
        flops = np.asarray(flops, dtype=float)
        nbytes = np.asarray(nbytes, dtype=float)
        memory = nbytes / self.bandwidth if np.isfinite(self.bandwidth) else np.zeros_like(nbytes)
        compute = flops / self.peak if np.isfinite(self.peak) else np.zeros_like(flops)
        return self.t0 + np.maximum(memory, compute)


def _failed(n: int, note: str) -> Fit:
    nan = float("nan")
    return Fit(nan, nan, nan, nan, nan, nan, nan, (), n, 0, 0, notes=(note,), refused=note)


def _nonnegative_lstsq(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin ||design·θ − target||² with θ ≥ 0: the unconstrained optimum if feasible, else the best
    feasible optimum over every support (≤ 3 columns: 7 sets; the constrained optimum is one of them)."""
    columns = design.shape[1]
    theta, *_ = np.linalg.lstsq(design, target, rcond=None)
    if np.all(theta >= 0):
        return theta  # the unconstrained optimum is feasible: nothing to enumerate
    best, best_cost = np.zeros(columns), float(np.sum(target**2))
    for size in range(1, columns + 1):
        for support in itertools.combinations(range(columns), size):
            sub = design[:, support]
            theta_sub, *_ = np.linalg.lstsq(sub, target, rcond=None)
            if np.any(theta_sub < 0):
                continue
            theta = np.zeros(columns)
            theta[list(support)] = theta_sub
            cost = float(np.sum((design @ theta - target) ** 2))
            if cost < best_cost:
                best, best_cost = theta, cost
    return best


def _predict(theta: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    t0, inv_bw, inv_peak = theta
    return t0 + np.maximum(inv_bw * nbytes, inv_peak * flops)


def _solve_split(compute: np.ndarray, flops, nbytes, seconds, weights, lower: np.ndarray, t0_free: bool) -> np.ndarray:
    """(t0, 1/BW, 1/P) ≥ ``lower`` for a fixed memory/compute split, minimising weighted relative error.

    A fixed t0 is passed as its lower bound with ``t0_free`` False (its column is zeroed: it stays there).
    """
    design = np.column_stack([np.ones_like(seconds), np.where(compute, 0.0, nbytes), np.where(compute, flops, 0.0)])
    design = design * (weights / seconds)[:, None]
    target = weights - design @ lower
    if not t0_free:
        design[:, 0] = 0.0
    return lower + _nonnegative_lstsq(design, target)


def _cost(theta, flops, nbytes, seconds, weights) -> float:
    return float(np.sum((weights * (_predict(theta, flops, nbytes) / seconds - 1.0)) ** 2))


def _bic(cost: float, n: int, k: int) -> float:
    return n * np.log(max(cost, 1e-300) / n) + k * np.log(n)


def _fit_weighted(flops, nbytes, seconds, weights, lower, t0_free) -> np.ndarray:
    """Best of three models by BIC: bandwidth only, compute only, both (the roofline).

    Every sweep is affine in its batch on either branch, so without this a memory-bound sweep can
    be fitted just as well as "compute-bound with a large t0". The default is the branch the caps'
    ridge puts most points on (bandwidth-only when there are no caps); the others must beat it by
    a BIC margin of 2 ("positive evidence") without pressing a parameter against its cap.
    """
    n = len(seconds)
    k = 2 if t0_free else 1
    memory_only = _solve_split(np.zeros(n, bool), flops, nbytes, seconds, weights, lower, t0_free)
    memory_only[2] = 0.0  # compute never binds: P unidentified, not the cap
    models = [(memory_only, k)]
    if np.any(flops > 0):
        intensity = np.divide(flops, nbytes, out=np.full_like(flops, np.inf), where=nbytes > 0)
        levels = np.unique(intensity)
        cuts = [c for c in (levels[:-1] + levels[1:]) / 2
                if MIN_BRANCH <= np.sum(intensity > c) <= n - MIN_BRANCH]
        compute_only = _solve_split(np.ones(n, bool), flops, nbytes, seconds, weights, lower, t0_free)
        compute_only[1] = 0.0
        cap_ridge = lower[1] / lower[2] if lower[1] > 0 and lower[2] > 0 else np.inf  # P_cap / BW_cap
        if np.median(intensity) > cap_ridge:
            models.insert(0, (compute_only, k))
        else:
            models.append((compute_only, k))
        if cuts:
            def cost(theta):
                return _cost(theta, flops, nbytes, seconds, weights)

            def branches_ok(theta) -> bool:
                return MIN_BRANCH <= int(np.sum(theta[2] * flops > theta[1] * nbytes)) <= n - MIN_BRANCH

            candidates = [_solve_split(intensity > cut, flops, nbytes, seconds, weights, lower, t0_free)
                          for cut in cuts]
            valid = [theta for theta in candidates if branches_ok(theta)]
            if valid:
                both = min(valid, key=cost)
                for _ in range(10):  # re-split at the fitted ridge until the split is self-consistent
                    split = both[2] * flops > both[1] * nbytes
                    refined = _solve_split(split, flops, nbytes, seconds, weights, lower, t0_free)
                    if not branches_ok(refined) or cost(refined) >= cost(both) - 1e-15:
                        break
                    both = refined
                models.append((both, k + 1))
    best, best_bic = models[0][0], _bic(_cost(models[0][0], flops, nbytes, seconds, weights), n, models[0][1])
    for theta, params in models[1:]:
        compute = theta[2] * flops > theta[1] * nbytes
        at_cap = (compute.any() and 0 < theta[2] <= lower[2]) or ((~compute).any() and 0 < theta[1] <= lower[1])
        if at_cap:
            continue  # the data want a roof beyond the physical cap: this branch does not explain them
        score = _bic(_cost(theta, flops, nbytes, seconds, weights), n, params)
        if score < best_bic - 2.0:
            best, best_bic = theta, score
    return best


def _standard_errors(theta, lower, compute, flops, nbytes, seconds, t0_free: bool, cutoff: float) -> np.ndarray:
    """Standard errors of (t0, 1/BW, 1/P) on the fitted split, honest about the robust weights and the bounds.

    Huber's M-estimator covariance: σ² = Σψ(r)²/(n − p) / (mean ψ'(r))² with r the relative residuals, so a
    point the reweighting clips widens the error instead of vanishing from it (the weighted residuals alone
    shrink with the weights: the noise estimate collapses). A free parameter pressed against a bound (t0 at 0,
    a roof at its cap) keeps its column: the bound is not knowledge, and the parameters it trades off with
    must carry that freedom. The ± is scaled by t(n − p)/z so ±2σ is a 95 % interval with few points too.
    NaN for a held t0 and for a branch no point is on.
    """
    columns = [np.ones_like(seconds), np.where(compute, 0.0, nbytes), np.where(compute, flops, 0.0)]
    free = [t0_free, theta[1] > 0, theta[2] > 0]
    active = [i for i in range(3) if free[i] and np.any(columns[i] != 0)]
    errors = np.full(3, np.nan)
    dof = len(seconds) - len(active)
    if not active or dof <= 0:
        return errors
    jac = np.column_stack([columns[i] for i in active]) / seconds[:, None]
    relative = _predict(theta, flops, nbytes) / seconds - 1.0
    cutoff = ERROR_CLIP * cutoff
    inside = np.abs(relative) <= cutoff
    psi = np.clip(relative, -cutoff, cutoff)
    slope = max(float(np.mean(inside)), 1.0 / len(seconds))  # mean ψ'(r)
    sigma2 = float(np.sum(psi**2)) / dof / slope**2
    sigma2 *= (_t975(dof) / 1.959964) ** 2
    try:
        cov = np.linalg.inv(jac.T @ jac) * sigma2
    except np.linalg.LinAlgError:
        return errors
    errors[active] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return errors


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t975(dof: int) -> float:
    """Student's t quantile at 0.975 (numpy only: a table to 30 degrees of freedom, then the normal's)."""
    return _T975[dof - 1] if dof <= len(_T975) else 1.959964 + 2.4 / dof


def fit_roofline(flops, nbytes, seconds, max_bandwidth: float | None = None, max_peak: float | None = None,
                 t0: float | None = None) -> Fit:
    """Fit t = t0 + max(bytes/BW, flops/P) by robust least squares on relative error.

    ``max_bandwidth`` / ``max_peak`` (bytes/s, FLOP/s) are physical caps, e.g. 1.25× the best of the
    measured ceiling and the datasheet: a sweep that never leaves one branch cannot otherwise tell
    BW, P and t0 apart. A given ``t0`` is held fixed (for a sweep whose bytes barely change with the
    batch, t0 and BW trade off; a pooled fit over several shapes can supply it).
    """
    flops = np.asarray(flops, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    seconds = np.asarray(seconds, dtype=float)
    good = (np.isfinite(flops) & np.isfinite(nbytes) & np.isfinite(seconds) & (seconds > 0)
            & ((flops > 0) | (nbytes > 0)))
    flops, nbytes, seconds = flops[good], nbytes[good], seconds[good]
    n = len(seconds)
    if n < MIN_POINTS:
        return _failed(n, f"refused: {n} usable points, too few (a fit needs {MIN_POINTS}: three parameters and "
                          "one degree of freedom to judge them)")

    t0_free = t0 is None
    lower = np.array([0.0 if t0_free else float(t0),  # lower bounds of (t0, 1/BW, 1/P)
                      1.0 / max_bandwidth if max_bandwidth else 0.0, 1.0 / max_peak if max_peak else 0.0])
    weights = np.ones(n)
    theta = _fit_weighted(flops, nbytes, seconds, weights, lower, t0_free)
    # The noise scale is set once, from the plain fit (MAD, corrected for the parameters fitted), and held
    # through the passes: re-estimated from each reweighted fit it shrinks as the fit hugs a subset of points,
    # clipping more of them each pass until the scale (and the reported error) collapses.
    relative = _predict(theta, flops, nbytes) / seconds - 1.0
    spread = 1.4826 * float(np.median(np.abs(relative - np.median(relative)))) * np.sqrt(n / max(n - 3, 1))
    cutoff = HUBER_K * max(spread, 1e-4)
    for _ in range(IRLS_PASSES):
        relative = _predict(theta, flops, nbytes) / seconds - 1.0
        weights = np.minimum(1.0, cutoff / np.maximum(np.abs(relative), 1e-300))
        theta = _fit_weighted(flops, nbytes, seconds, weights, lower, t0_free)

    fitted_t0, inv_bw, inv_peak = theta
    compute = inv_peak * flops > inv_bw * nbytes
    n_compute = int(np.sum(compute))
    n_memory = n - n_compute
    residuals = _predict(theta, flops, nbytes) / seconds - 1.0
    errors = _standard_errors(theta, lower, compute, flops, nbytes, seconds, t0_free, cutoff)
    nan = float("nan")
    bandwidth = 1.0 / inv_bw if inv_bw > 0 and n_memory else nan
    peak = 1.0 / inv_peak if inv_peak > 0 and n_compute else nan
    bandwidth_rse = errors[1] / inv_bw if np.isfinite(bandwidth) else nan
    peak_rse = errors[2] / inv_peak if np.isfinite(peak) else nan
    intensity = np.divide(flops, nbytes, out=np.full_like(flops, np.inf), where=nbytes > 0)
    peak_floor = bandwidth_floor = nan

    def span(values) -> float:
        return float(values.max() / values.min()) if len(values) and values.min() > 0 else 1.0

    separable = max(span(nbytes[~compute]), span(flops[compute])) >= SEPARABLE_SPAN
    notes: list[str] = []
    if n_memory and inv_bw == 0:
        notes.append("t0 alone explains the memory-bound points: BW_eff unidentifiable")
    if not np.any(flops > 0):
        notes.append("no FLOPs: compute peak does not apply")
    elif n_compute == 0:
        if np.isfinite(bandwidth):
            peak_floor = bandwidth * float(np.max(intensity))
        notes.append(f"all {n} points memory-bound (no knee in range): P_eff unidentifiable"
                     + (f", only ≥ {quantity(peak_floor, 'FLOP/s')}" if np.isfinite(peak_floor) else ""))
    if n_memory == 0:
        if np.isfinite(peak):
            bandwidth_floor = peak / float(np.min(intensity))
        notes.append(f"all {n} points compute-bound: BW_eff unidentifiable"
                     + (f", only ≥ {quantity(bandwidth_floor, 'B/s')}" if np.isfinite(bandwidth_floor) else ""))
    if max_peak and n_compute and inv_peak <= lower[2]:
        notes.append("P_eff sits at its cap")
    if max_bandwidth and n_memory and inv_bw <= lower[1]:
        notes.append("BW_eff sits at its cap")
    if np.isfinite(bandwidth_rse) and bandwidth_rse > POOR_RSE:
        notes.append(f"BW_eff poorly determined (±{100 * bandwidth_rse:.0f} %): t0 and BW trade off")
    beyond = []  # a fit whose own figures the physical roof forbids explains nothing: refused, saying why
    if max_bandwidth and np.isfinite(bandwidth_floor) and bandwidth_floor > max_bandwidth:
        beyond.append(f"all {n} points compute-bound needs BW_eff ≥ {quantity(bandwidth_floor, 'B/s')}, beyond the "
                      f"roof {quantity(max_bandwidth, 'B/s')}")
    if max_peak and np.isfinite(peak_floor) and peak_floor > max_peak:
        beyond.append(f"all {n} points memory-bound needs P_eff ≥ {quantity(peak_floor, 'FLOP/s')}, beyond the "
                      f"roof {quantity(max_peak, 'FLOP/s')}")
    if beyond:
        return _failed(n, "refused: " + "; ".join(beyond))
    return Fit(bandwidth, peak, float(fitted_t0), float(bandwidth_rse), float(peak_rse), float(errors[0]),
               float(np.mean(np.abs(residuals))), tuple(float(r) for r in residuals), n, n_memory, n_compute,
               peak_floor, bandwidth_floor, separable, tuple(notes))
