"""A model-based stage method: Gaussian-process Thompson sampling inside the stage's box.

A stage with ``method: gp`` still searches the box the zoom gave it, and its trials still run in
parallel, but each trial is placed where one draw of a Gaussian-process posterior, fitted on every
ended trial so far, is lowest among candidate points of the box (Thompson sampling; with trials in
flight each one takes its own draw, so they spread without waiting for each other: asynchronous
parallel Thompson sampling, Kandasamy et al. 2018; inside a box that zooms, as TuRBO, Eriksson et
al. 2019). The box stays what a user reads in MLflow; the model only decides where in it to look.

The GP is the textbook one (Rasmussen & Williams 2006, Algorithm 2.1: Matern 5/2, one length
scale, white noise) in a few lines of numpy/scipy. Its two hyperparameters are chosen by the log
marginal likelihood over a fixed grid (:data:`LENGTH_SCALES` x :data:`NOISES`), not by L-BFGS.
scikit-learn's ``GaussianProcessRegressor`` was tried first: with its optimizer a fit took
140-290 ms at 64-128 trials and even the grid cost ~40 ms of per-call overhead, which made one
64-trial search 10 s of CPU (the benchmark runs tens of thousands); this costs a few ms. The observed values are replaced by their
normal scores (a Gaussian copula: ``Phi^-1((rank + 0.5) / n)``), so a metric with heavy tails or
diverged trials (BBOB's Rosenbrock, a loss of 1e6) does not flatten the model. Failed trials and
trials that break a satisficing constraint get the worst score.

Pure functions (numpy, scipy, threadpoolctl; no Ray, no MLflow), except that a
:class:`Posterior` remembers which candidates it has handed out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from dlops.search.space import Box, Constraint, Mode, Param, TrialOutcome, in_box, is_feasible, sample_box

#: length scales tried (in the unit cube of the original range, times sqrt(dim))
LENGTH_SCALES = (0.05, 0.1, 0.2, 0.4, 0.8)
#: white-noise variances tried (the normal scores have variance about 1)
NOISES = (1e-4, 1e-2, 0.1)
#: candidate points drawn in the box per Thompson draw
N_CANDIDATES = 256
#: the most trials one fit uses: its cost grows as n^3 (bench/gp_fit_cost.py), so a search of
#: thousands of trials fits on the trials inside the stage's box first, then the best others
MAX_TRIALS = 256


def encode(params: Sequence[Param], original: Box, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Configurations as points of the unit cube of the original range: one coordinate per numeric
    parameter (its sampling-scale value, 0 at the low bound of ``original``, 1 at the high one) and
    one 0/1 coordinate per choice of each categorical parameter; ``const`` parameters are left out.

    Returns:
        array of shape ``(len(configs), n_columns)``; a missing value encodes as 0.5 (numeric) or
        all zeros (categorical).
    """
    cols: list[np.ndarray] = []
    for p in params:
        if p.is_numeric and p.name in original.intervals:
            lo, hi = original.intervals[p.name]
            w = hi - lo
            cols.append(np.array([
                (p.to_u(float(c[p.name])) - lo) / w if (p.name in c and w > 0) else 0.5 for c in configs
            ]))
        elif p.scale == "choice" and p.name in original.choices:
            for ch in original.choices[p.name]:
                cols.append(np.array([1.0 if p.name in c and repr(c[p.name]) == repr(ch) else 0.0 for c in configs]))
    if not cols:
        return np.zeros((len(configs), 0))
    return np.stack(cols, axis=1)


def normal_scores(values: Sequence[float], mode: Mode) -> np.ndarray:
    """The Gaussian-copula transform of ``values``: ``Phi^-1((rank + 0.5) / n)``, lower is better
    (``mode="max"`` ranks the negated values); ties share their mean rank. NaN counts as the worst.

    Returns:
        array of ``len(values)`` finite scores, order kept; without ties symmetric about 0.
    """
    from scipy.stats import norm, rankdata

    v = np.asarray(values, dtype=float)
    if mode == "max":
        v = -v
    v = np.where(np.isfinite(v), v, np.inf)
    if v.size == 0:
        return v
    r = rankdata(v, method="average") - 1
    return norm.ppf((r + 0.5) / v.size)


@dataclass
class Posterior:
    """A fitted GP's joint posterior over a box's candidate points (:func:`fit_posterior`)."""

    candidates: list[dict[str, Any]]  # configs, value scale
    mean: np.ndarray  # shape (m,)
    chol: np.ndarray  # shape (m, m), lower Cholesky factor of the posterior covariance
    length_scale: float
    noise: float

    taken: set[int] = field(default_factory=set)  # candidates already drawn from this posterior

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """The candidate where one joint posterior draw is lowest (Thompson sampling), among those
        not drawn before from this posterior: trials in flight together never repeat a point.
        Once all are taken, they are all available again."""
        f = self.mean + self.chol @ rng.standard_normal(self.mean.size)
        if len(self.taken) >= f.size:
            self.taken.clear()
        if self.taken:
            f[list(self.taken)] = np.inf
        i = int(np.argmin(f))
        self.taken.add(i)
        return dict(self.candidates[i])


def fit_posterior(
    params: Sequence[Param],
    box: Box,
    original: Box,
    trials: Sequence[TrialOutcome],
    metric: str,
    mode: Mode,
    rng: np.random.Generator,
    constraints: Sequence[Constraint] = (),
    fixed: Mapping[str, Any] | None = None,
    n_candidates: int = N_CANDIDATES,
    max_trials: int = MAX_TRIALS,
) -> Posterior | None:
    """Fit the GP on ``trials`` and its joint posterior on ``n_candidates`` random points of ``box``.

    Args:
        params, box, original: the space, the stage's box and the search's original box (the
            encoding's unit cube).
        trials: every ended trial so far (any box); a trial without a finite ``metric`` or that
            breaks a constraint counts with the worst score.
        metric, mode: the optimizing metric and its direction.
        rng: the only source of randomness (the candidates).
        fixed: parameters held at a value (tiers not yet tuned): the candidates keep it.
        n_candidates: candidate points (Sobol in the box), >= 1.
        max_trials: with more trials than this, the fit uses this many: those inside ``box``
            first (a local model of the region the stage searches, as TuRBO's), best first, then
            the best of the others (:func:`_most_relevant`).

    Raises:
        ValueError: ``n_candidates`` < 1.

    Returns:
        the posterior, or None when fewer than 2 trials have a finite feasible value (then there
        is nothing to model: the caller samples the box instead) or when no length scale and
        noise level of the grid give a positive-definite kernel matrix.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    if len(trials) > max_trials:
        trials = _most_relevant(params, box, trials, metric, mode, constraints, max_trials)
    ok = [t for t in trials if is_feasible(t, metric, constraints)]
    if len(ok) < 2:
        return None
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the matrices are at most a few hundred rows, and OpenBLAS's threads spinning
    # against busy cores made one 256 x 256 Cholesky factorisation 140 ms instead of 1 ms (measured)
    with threadpool_limits(1, user_api="blas"):
        return _fit(params, box, original, trials, ok, metric, mode, rng, fixed, n_candidates)


def _fit(params: Sequence[Param], box: Box, original: Box, trials: Sequence[TrialOutcome],
         ok: Sequence[TrialOutcome], metric: str, mode: Mode, rng: np.random.Generator,
         fixed: Mapping[str, Any] | None, n_candidates: int) -> Posterior | None:
    from scipy.linalg import cho_solve, cholesky, solve_triangular

    good = {t.trial_id for t in ok}
    y = normal_scores([float(t.metrics[metric]) if t.trial_id in good else math.nan for t in trials], mode)
    bad = np.array([t.trial_id not in good for t in trials])
    if bad.any():
        y[bad] = y.max() + 0.5  # failed / infeasible: worse than every feasible trial
    y = (y - y.mean()) / (y.std() or 1.0)
    x = encode(params, original, [t.config for t in trials])
    scale = math.sqrt(max(1, x.shape[1]))
    d = _distances(x, x)
    n = len(y)
    best: tuple[float, float, float, np.ndarray] | None = None
    for ls in LENGTH_SCALES:
        k = matern52(d, ls * scale)
        for nz in NOISES:
            try:
                low = cholesky(k + nz * np.eye(n), lower=True)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve((low, True), y)
            # log p(y | X) = -y'K^-1 y / 2 - log|K| / 2 - n log(2 pi) / 2 (Rasmussen & Williams, eq. 2.30)
            lml = -0.5 * float(y @ alpha) - float(np.sum(np.log(np.diag(low)))) - 0.5 * n * math.log(2 * math.pi)
            if best is None or lml > best[0]:
                best = (lml, ls, nz, low)
    if best is None:
        return None
    _, ls, nz, low = best
    cands = sample_box(params, box, n_candidates, rng, "sobol", fixed)
    xc = encode(params, original, cands)
    ks = matern52(_distances(xc, x), ls * scale)  # (m, n)
    mean = ks @ cho_solve((low, True), y)
    v = solve_triangular(low, ks.T, lower=True)  # (n, m)
    cov = matern52(_distances(xc, xc), ls * scale) - v.T @ v  # the latent function's posterior
    return Posterior(cands, mean, _safe_cholesky(cov), ls, nz)


def _most_relevant(params: Sequence[Param], box: Box, trials: Sequence[TrialOutcome], metric: str, mode: Mode,
                   constraints: Sequence[Constraint], limit: int) -> list[TrialOutcome]:
    """``limit`` of ``trials``, in their order: inside ``box`` before outside, feasible before
    failed or infeasible, better before worse."""
    sign = 1.0 if mode == "min" else -1.0

    def key(i: int) -> tuple[bool, bool, float]:
        t = trials[i]
        ok = is_feasible(t, metric, constraints)
        return (not in_box(params, box, t.config), not ok, sign * float(t.metrics[metric]) if ok else 0.0)

    keep = sorted(sorted(range(len(trials)), key=key)[:limit])
    return [trials[i] for i in keep]


def matern52(d: np.ndarray, length_scale: float) -> np.ndarray:
    """The Matern 5/2 kernel of unit variance at distances ``d`` (Rasmussen & Williams, eq. 4.17):
    ``(1 + s + s^2 / 3) exp(-s)`` with ``s = sqrt(5) d / length_scale``; same shape as ``d``."""
    s = math.sqrt(5.0) * d / length_scale
    k = (1.0 + s + s * s / 3.0) * np.exp(-s)
    k[s > 60] = 0.0  # below 1e-23: exact zeros keep LAPACK off subnormal numbers (100x slower)
    return k


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b) if a.shape[1] else np.zeros((a.shape[0], b.shape[0]))


def _safe_cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor of a covariance matrix made positive definite by the smallest jitter that works."""
    cov = (cov + cov.T) / 2
    jitter = 1e-6 * max(1e-12, float(np.mean(np.abs(np.diag(cov)))))
    for _ in range(4):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(cov.shape[0]))
        except np.linalg.LinAlgError:
            jitter *= 100
    w, v = np.linalg.eigh(cov)  # last resort: the PSD part's square root
    return v * np.sqrt(np.clip(w, 0, None))
