"""Deterministic split makers (random, cluster, property range, chemistry) and OOD diagnostics.

All makers return a :class:`Split` of sorted 0-based indices whose parts are disjoint and cover
``range(n)``; they are deterministic given ``seed``.
"""

from __future__ import annotations

from matgl_cal.splits._diagnostics import nearest_train_distance, ood_score
from matgl_cal.splits._makers import (
    Split,
    chemistry_split,
    cluster_split,
    composition_features,
    leave_cluster_out_splits,
    property_range_split,
    random_split,
)

__all__ = [
    "Split",
    "chemistry_split",
    "cluster_split",
    "composition_features",
    "leave_cluster_out_splits",
    "nearest_train_distance",
    "ood_score",
    "property_range_split",
    "random_split",
]
