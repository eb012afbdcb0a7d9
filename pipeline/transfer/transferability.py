"""Cheap transferability scores: rank candidate source models without fine-tuning them.

Each score looks only at what a frozen source model produces on the target training set
(penultimate features for LogME, source-class probabilities for LEEP) and predicts how well
the model will transfer. The scores are only meaningful *relative to each other* on the same
target data set; :func:`kendall_tau` measures how well a score's ranking agrees with the
accuracies actually reached after fine-tuning.

References:

* K. You, Y. Liu, J. Wang, M. Long. "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning". ICML 2021.
* C. V. Nguyen, T. Hassner, M. Seeger, C. Archambeau. "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations". ICML 2020.
* M. G. Kendall. "The treatment of ties in ranking problems". Biometrika 1945 (tau-b).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.errors import UserError

# The evidence is often very flat near its maximum (N < D especially), so the iteration stops
# on the change of the per-sample evidence rather than of alpha/beta; the cap only guards
# against pathological inputs and is not reached on ordinary features.
_LOGME_MAX_ITER = 10_000
_LOGME_TOL = 1e-12
# Keeps beta finite should a residual underflow to 0.
_TINY = np.finfo(np.float64).tiny


def _as_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    """Validate integer class labels of length ``n``; return them as an int64 vector."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise UserError(f"{what}: labels must have shape ({n},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise UserError(f"{what}: labels must be non-negative")
    return labels.astype(np.int64, copy=False)


def _as_matrix(x: np.ndarray, what: str, name: str) -> np.ndarray:
    """Validate a non-empty, finite 2D array; return it as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"{what}: {name} must be 2D (N, D), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{what}: {name} is empty (shape {x.shape})")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{what}: {name} contains NaN or infinite values")
    return x


# --------------------------------------------------------------------------------------- LogME


def _logme_evidence(
    alpha: float, beta: float, sigma: np.ndarray, x2: np.ndarray, res_outside: float, n: int
) -> tuple[float, float, float, float]:
    """Evidence per sample at (alpha, beta), plus the gamma, mᵀm and residual it used.

    Written in the SVD basis of F (F = U S Vᵀ, σ = S², x = Uᵀy), where
    m = V · βSx / (α + βσ) and y - F m = U · αx / (α + βσ) + (the part of y outside U).
    ``alpha = inf`` is the legitimate limit "the features explain nothing" (w = 0).
    """
    if math.isinf(alpha):
        gamma, m_sq, alpha_m_sq, log_term = 0.0, 0.0, 0.0, 0.0
        res = float(x2.sum()) + res_outside
    else:
        # Ratios rather than α², β² so that a large α (weak features) cannot overflow.
        denom = alpha + beta * sigma
        a_ratio, b_ratio = alpha / denom, beta / denom
        gamma = float((sigma * b_ratio).sum())
        m_sq = float((sigma * x2 * b_ratio**2).sum())
        alpha_m_sq = alpha * m_sq
        res = float((x2 * a_ratio**2).sum()) + res_outside
        # D/2 log α - 1/2 log|A|, with log|A| = Σ_k log(α + βσ) + (D - k) log α for the D - k
        # zero eigenvalues of FᵀF, simplifies to this; log1p keeps it exact for large α.
        log_term = float(np.log1p(beta * sigma / alpha).sum())
    evidence = (
        n / 2.0 * math.log(beta)
        - 0.5 * log_term
        - beta / 2.0 * res
        - alpha_m_sq / 2.0
        - n / 2.0 * math.log(2.0 * math.pi)
    )
    return evidence / n, gamma, m_sq, res


def _logme_class_evidence(u_t_y: np.ndarray, y_sq: float, sigma: np.ndarray, n: int) -> float:
    """Maximised log evidence per sample for one target vector y (LogME, Algorithm 1)."""
    x2 = u_t_y**2
    # ||y||² - ||Uᵀy||²: the part of y orthogonal to the column space of F, which no m can fit.
    res_outside = max(y_sq - float(x2.sum()), 0.0)
    alpha, beta = 1.0, 1.0
    previous = -math.inf
    for _ in range(_LOGME_MAX_ITER):
        evidence, gamma, m_sq, res = _logme_evidence(alpha, beta, sigma, x2, res_outside, n)
        if abs(evidence - previous) <= _LOGME_TOL:
            break
        previous = evidence
        # α grows without bound when the features carry no signal for this class; jump to the
        # limit instead of overflowing.
        alpha = gamma / m_sq if m_sq > 0.0 and gamma < 1e300 * m_sq else math.inf
        beta = (n - gamma) / max(res, _TINY)
    return evidence


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME score of ``features`` (N, D) for integer class ``labels`` (N,); higher is better.

    LogME (You et al., ICML 2021) fits, for each class c, a Bayesian linear model
    y = F w + ε with prior w ~ N(0, α⁻¹ I) and noise ε ~ N(0, β⁻¹ I), where y is the one-hot
    indicator 1[label = c]. The log marginal evidence is::

        L(α, β) = D/2 log α + N/2 log β - 1/2 log|A| - β/2 ||F m - y||² - α/2 mᵀm - N/2 log 2π
        A = α I + β FᵀF,   m = β A⁻¹ Fᵀ y

    It is maximised with the paper's fixed-point (MacKay) iteration. With σᵢ the eigenvalues
    of FᵀF::

        γ = Σᵢ β σᵢ / (α + β σᵢ),   α ← γ / mᵀm,   β ← (N - γ) / ||F m - y||²

    Everything is computed in the basis of the reduced SVD F = U S Vᵀ (k = min(N, D) singular
    values), so both N < D and N > D are handled, and the D - k zero eigenvalues of FᵀF are
    accounted for in log|A| as (D - k) log α. The score is L/N at the optimum, averaged over
    the classes present in ``labels``. Computed in float64 throughout.
    """
    f = _as_matrix(features, "logme", "features")
    # The maximised evidence is invariant to scaling the features (alpha absorbs it), so
    # normalise: features around 1e14 would otherwise underflow beta.
    scale = float(np.std(f))
    if scale > 0:
        f = f / scale
    n, d = f.shape
    y_int = _as_labels(labels, n, "logme")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    # Treat numerically-zero singular values as exact zeros (numpy's matrix_rank tolerance);
    # their directions then count among the D - k zero eigenvalues of FᵀF.
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], s[keep] ** 2
    evidences = []
    for c in np.unique(y_int):
        y = (y_int == c).astype(np.float64)
        evidences.append(_logme_class_evidence(u.T @ y, float(y @ y), sigma, n))
    return float(np.mean(evidences))


# ---------------------------------------------------------------------------------------- LEEP


def leep(source_probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """LEEP score of a source classifier on a target set; higher is better, at most 0.

    LEEP (Nguyen et al., ICML 2020) with θ(xᵢ) the source model's class distribution
    (``source_probs``, rows summing to 1) and yᵢ the target labels::

        P̂(y, z) = 1/N Σᵢ 1[yᵢ = y] θ(xᵢ)_z          empirical joint distribution
        P̂(y | z) = P̂(y, z) / P̂(z),  P̂(z) = Σ_y P̂(y, z)
        LEEP    = 1/N Σᵢ log Σ_z P̂(yᵢ | z) θ(xᵢ)_z

    i.e. the average log-likelihood of the "expected empirical predictor" that maps source
    predictions onto target classes. Source classes that no sample puts mass on (P̂(z) = 0)
    get P̂(y | z) = 0; they cannot contribute because θ(xᵢ)_z = 0 for every i.
    """
    theta = _as_matrix(source_probs, "leep", "source_probs")
    n = theta.shape[0]
    y = _as_labels(labels, n, "leep")
    if np.any(theta < 0) or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-4):
        raise UserError("leep: source_probs rows must be non-negative and sum to 1 (apply softmax first)")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if k <= int(y.max()):
        raise UserError(f"leep: num_classes={k} but labels go up to {int(y.max())}")
    joint = np.zeros((k, theta.shape[1]), dtype=np.float64)
    np.add.at(joint, y, theta)
    joint /= n
    p_z = joint.sum(axis=0)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    eep = (theta * cond[y]).sum(axis=1)
    return float(np.mean(np.log(eep)))


# ----------------------------------------------------------------------------- ranking helpers


def rank_sources(scores: Mapping[str, float]) -> list[str]:
    """Source names ordered from best (highest score) to worst; ties broken by name."""
    bad = [name for name, value in scores.items() if math.isnan(value)]
    if bad:
        raise UserError(f"rank_sources: NaN score for {', '.join(sorted(bad))}")
    return sorted(scores, key=lambda name: (-scores[name], name))


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation between ``a`` and ``b``, in [-1, 1].

    tau-b = (n_c - n_d) / sqrt((n_0 - t_a) (n_0 - t_b)), where n_c / n_d count concordant /
    discordant pairs, n_0 = n(n-1)/2 and t_a / t_b count pairs tied in ``a`` / ``b``; this
    matches ``scipy.stats.kendalltau``'s default. Returns NaN when either side is constant
    (or has one element), as scipy does. O(n²), meant for the handful of candidate sources.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise UserError(f"kendall_tau: need two 1D sequences of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise UserError("kendall_tau: empty input")
    i, j = np.triu_indices(x.size, k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[i] - y[j])
    # Pairs tied in one variable have sign 0 and drop out of both the numerator and that factor.
    denom = math.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    if denom == 0.0:
        return float("nan")
    return float((sx * sy).sum() / denom)
