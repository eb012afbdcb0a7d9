"""Transferability scores: LEEP by hand, LogME against a direct implementation, tau-b vs scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.transfer.transferability import kendall_tau, leep, logme, rank_sources

# ------------------------------------------------------------------------------------------ LEEP


def test_leep_hand_computed_2x2() -> None:
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1])
    # Joint P(y, z) = 1/4 Σ_i 1[y_i = y] θ_iz:
    #   P(0,0) = (0.9 + 0.6)/4 = 0.375   P(0,1) = (0.1 + 0.4)/4 = 0.125
    #   P(1,0) = (0.2 + 0.3)/4 = 0.125   P(1,1) = (0.8 + 0.7)/4 = 0.375
    # P(z=0) = P(z=1) = 0.5, so P(y|z): P(0|0) = 0.75, P(1|0) = 0.25, P(0|1) = 0.25, P(1|1) = 0.75.
    # Expected empirical predictor for the true label of each sample:
    #   x1 (y=0): 0.75*0.9 + 0.25*0.1 = 0.70
    #   x2 (y=0): 0.75*0.6 + 0.25*0.4 = 0.55
    #   x3 (y=1): 0.25*0.2 + 0.75*0.8 = 0.65
    #   x4 (y=1): 0.25*0.3 + 0.75*0.7 = 0.60
    expected = (math.log(0.70) + math.log(0.55) + math.log(0.65) + math.log(0.60)) / 4
    assert leep(theta, labels) == pytest.approx(expected, abs=1e-12)


def test_leep_is_zero_for_a_deterministic_source_to_target_map() -> None:
    # Source classes 0,1 -> target 0; 2 -> target 1; 3 -> target 2; source class 4 never predicted
    # (a zero column, which must not produce NaN).
    source = np.array([0, 1, 2, 3, 0, 2, 3, 1])
    theta = np.eye(5)[source]
    labels = np.array([0, 0, 1, 2, 0, 1, 2, 0])
    assert leep(theta, labels) == pytest.approx(0.0, abs=1e-12)


def test_leep_prefers_informative_sources() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    informative = np.full((60, 3), 0.05)
    informative[np.arange(60), labels] = 0.9
    uninformative = rng.dirichlet(np.ones(3), size=60)
    assert leep(informative, labels) > leep(uninformative, labels)


def test_leep_validates_input() -> None:
    theta = np.array([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(UserError, match="shape"):
        leep(theta, np.array([0, 1, 1]))
    with pytest.raises(UserError, match="sum to 1"):
        leep(np.array([[0.5, 0.6], [1.0, 0.0]]), np.array([0, 1]))
    with pytest.raises(UserError, match="num_classes"):
        leep(theta, np.array([0, 2]), num_classes=2)
    with pytest.raises(UserError, match="empty"):
        leep(np.zeros((0, 2)), np.zeros(0, dtype=int))


# ----------------------------------------------------------------------------------------- LogME


def _logme_direct(features: np.ndarray, labels: np.ndarray) -> float:
    """Straightforward LogME: D x D matrices, eigendecomposition of FᵀF, explicit solves.

    Same fixed-point updates as the paper (gamma, alpha = gamma / mᵀm, beta = (N - gamma) /
    residual), iterated until alpha and beta stop moving; no SVD and no reduced basis.
    """
    f = features.astype(np.float64)
    n, d = f.shape
    sigma = np.clip(np.linalg.eigvalsh(f.T @ f), 0.0, None)
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(100_000):
            a_mat = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a_mat, f.T @ y)
            gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
            new_alpha = gamma / float(m @ m)
            new_beta = (n - gamma) / float(np.sum((f @ m - y) ** 2))
            converged = abs(new_alpha - alpha) <= 1e-11 * alpha and abs(new_beta - beta) <= 1e-11 * beta
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        a_mat = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a_mat, f.T @ y)
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.linalg.slogdet(a_mat)[1]
            - beta / 2 * np.sum((f @ m - y) ** 2)
            - alpha / 2 * (m @ m)
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def _informative_features(rng: np.random.Generator, labels: np.ndarray, d: int, noise: float) -> np.ndarray:
    """Class-dependent means plus Gaussian noise: a finite LogME optimum for every class."""
    means = rng.normal(size=(int(labels.max()) + 1, d))
    return means[labels] + noise * rng.normal(size=(labels.size, d))


@pytest.mark.parametrize(("n", "d"), [(60, 8), (12, 30)], ids=["N>D", "N<D"])
def test_logme_matches_direct_implementation(n: int, d: int) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, n)
    labels[:3] = [0, 1, 2]
    features = _informative_features(rng, labels, d, noise=1.0)
    assert logme(features, labels) == pytest.approx(_logme_direct(features, labels), abs=1e-6)


@pytest.mark.parametrize(("n", "d"), [(80, 16), (20, 64)], ids=["N>D", "N<D"])
def test_logme_ranks_informative_features_above_random(n: int, d: int) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, n)
    informative = _informative_features(rng, labels, d, noise=0.1)
    random = rng.normal(size=(n, d))
    assert logme(informative, labels) > logme(random, labels)


def test_logme_handles_features_without_signal() -> None:
    # All-zero features: the evidence optimum is at alpha = inf (w = 0); the score stays finite.
    score = logme(np.zeros((6, 4)), np.array([0, 1, 0, 1, 1, 0]))
    # With w = 0 each class c maximises N/2 log β - β/2 ||y||² at β = N/||y||² (here 6/3).
    beta = 2.0
    expected = (3 * math.log(beta) - beta / 2 * 3 - 3 * math.log(2 * math.pi)) / 6
    assert score == pytest.approx(expected, abs=1e-12)


def test_logme_validates_input() -> None:
    with pytest.raises(UserError, match="shape"):
        logme(np.zeros((4, 3)), np.array([0, 1, 0]))
    with pytest.raises(UserError, match="2D"):
        logme(np.zeros(4), np.array([0, 1, 0, 1]))
    with pytest.raises(UserError, match="empty"):
        logme(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(UserError, match="integers"):
        logme(np.zeros((2, 3)), np.array([0.0, 1.0]))


# --------------------------------------------------------------------------------- ranking tools


def test_rank_sources_descending_with_name_tiebreak() -> None:
    assert rank_sources({"b": 1.0, "a": 1.0, "c": 3.0, "d": -2.0}) == ["c", "a", "b", "d"]
    with pytest.raises(UserError, match="NaN"):
        rank_sources({"a": float("nan")})


def test_kendall_tau_matches_scipy_with_ties() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(3, 25))
        # Small integer ranges force ties on both sides.
        a = rng.integers(0, 5, n).astype(float)
        b = rng.integers(0, 4, n).astype(float)
        expected = scipy_stats.kendalltau(a, b).statistic
        got = kendall_tau(a.tolist(), b.tolist())
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_edge_cases() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(UserError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(UserError, match="empty"):
        kendall_tau([], [])
