"""Diagnostics for how out-of-distribution a split really is."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from matgl_cal.splits._makers import _as_2d_features, _check_seed

__all__ = ["nearest_train_distance", "ood_score"]


def nearest_train_distance(train_features: Any, test_features: Any) -> np.ndarray:
    """Euclidean distance of every test sample to its nearest training sample.

    Args:
        train_features: Array of shape (n_train, d).
        test_features: Array of shape (n_test, d).

    Returns:
        Array of shape (n_test,), in the units of the features.
    """
    from sklearn.neighbors import NearestNeighbors

    xtr = _as_2d_features("train_features", train_features)
    xte = _as_2d_features("test_features", test_features)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train_features and test_features must have the same number of columns, got "
            f"{xtr.shape[1]} and {xte.shape[1]}."
        )
    nn = NearestNeighbors(n_neighbors=1).fit(xtr)
    dist, _ = nn.kneighbors(xte)
    return dist[:, 0]


def ood_score(
    train_features: Any,
    test_features: Any,
    *,
    reference: Literal["random"] | None = "random",
    seed: int = 0,
    n_repeats: int = 5,
) -> float:
    """How far the test set lies from the training set, relative to a random split.

    ``d(train, test)`` is the mean over test samples of the Euclidean distance to the nearest
    training sample. With ``reference="random"`` the score is
    ``d(train, test) / mean_r d(train_r, test_r)`` where ``(train_r, test_r)`` are random splits of
    the pooled samples with the same sizes (``n_repeats`` draws). A score near 1 means the "OOD"
    test set is as close to the training data as a random test set (interpolation in disguise);
    a score well above 1 means a genuine extrapolation in this feature space.

    Args:
        train_features: Array of shape (n_train, d), e.g. model readout vectors or
            :func:`matgl_cal.splits.composition_features`.
        test_features: Array of shape (n_test, d), same feature space.
        reference: ``"random"`` for the ratio above (unitless), or ``None`` for the raw mean
            nearest-neighbour distance (feature units).
        seed: Seed of the random reference splits.
        n_repeats: Number of random reference splits averaged (>= 1).

    Returns:
        The score (float).

    Raises:
        ValueError: Empty or non-finite features, mismatched dimensions, bad ``reference`` or ``n_repeats``.
    """
    xtr = _as_2d_features("train_features", train_features)
    xte = _as_2d_features("test_features", test_features)
    seed = _check_seed(seed)
    d = float(np.mean(nearest_train_distance(xtr, xte)))
    if reference is None:
        return d
    if reference != "random":
        raise ValueError(f"reference must be 'random' or None, got {reference!r}.")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an int >= 1, got {n_repeats!r}.")
    pool = np.vstack([xtr, xte])
    n_tr = xtr.shape[0]
    rng = np.random.default_rng(seed)
    refs = []
    for _ in range(int(n_repeats)):
        perm = rng.permutation(pool.shape[0])
        refs.append(np.mean(nearest_train_distance(pool[perm[:n_tr]], pool[perm[n_tr:]])))
    ref = float(np.mean(refs))
    if ref == 0.0:
        # All pooled samples coincide with a training sample under random splits (duplicates).
        return float("inf") if d > 0 else 1.0
    return d / ref
