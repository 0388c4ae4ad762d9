"""Split a test error into a common offset and what is left: how much of an OOD MAE is one shift.

On a split that holds out the top or bottom of the target range (``property_range``), every test target lies
outside the training range, so a model that cannot extrapolate under- or over-predicts all of them by about the
same amount. Its test MAE then measures the level of its predictions on the held-out range, not how well it
orders the test structures. :func:`error_decomposition` makes that visible for any split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["ERROR_DECOMPOSITION_KEYS", "error_decomposition"]

#: Keys of :func:`error_decomposition`'s result, in the order reports show them.
ERROR_DECOMPOSITION_KEYS = ("mae", "mean_error", "offset_share", "centred_mae", "spearman")


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks ``0..n-1`` with ties given their mean rank."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=float)
    ranks[order] = np.arange(len(v), dtype=float)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def error_decomposition(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """Mean absolute error split into the common offset of the predictions and the rest.

    Args:
        y_true: Targets, shape ``(n,)``, in the target's units.
        y_pred: Predictions, shape ``(n,)``, same units.

    Returns:
        ``mae``: mean ``|y_pred - y_true|``;
        ``mean_error``: mean ``y_pred - y_true`` (the offset; negative = predictions too low);
        ``offset_share``: ``|mean_error| / mae`` in ``[0, 1]`` (1 = every prediction is off in the same
        direction, so the MAE is all offset; NaN when ``mae`` is 0);
        ``centred_mae``: the MAE after subtracting ``mean_error`` from every prediction, i.e. the error that is
        not a common shift (it can exceed ``mae`` when a few large errors pull the mean away from the bulk: the
        mean, not the median, is removed);
        ``spearman``: rank correlation of predictions with targets (how well the test structures are ordered;
        NaN when either side is constant or ``n < 2``).

    Raises:
        ValueError: Different lengths, no samples, or a value that is not finite.

    Example:
        >>> d = error_decomposition([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
        >>> d["mae"], d["mean_error"], d["offset_share"], d["centred_mae"], d["spearman"]
        (1.0, -1.0, 1.0, 0.0, 1.0)
    """
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y.shape[0]} and {p.shape[0]}")
    if y.size == 0:
        raise ValueError("y_true and y_pred must hold at least one sample, got 0")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError(
            f"y_true and y_pred must be finite, got {int((~np.isfinite(y)).sum())} and "
            f"{int((~np.isfinite(p)).sum())} non-finite values"
        )
    err = p - y
    mae = float(np.abs(err).mean())
    mean_error = float(err.mean())
    spearman = math.nan
    if y.size >= 2 and np.ptp(y) > 0 and np.ptp(p) > 0:
        spearman = float(np.corrcoef(_ranks(y), _ranks(p))[0, 1])
    return {
        "mae": mae,
        "mean_error": mean_error,
        "offset_share": abs(mean_error) / mae if mae > 0 else math.nan,
        "centred_mae": float(np.abs(err - mean_error).mean()),
        "spearman": spearman,
    }
