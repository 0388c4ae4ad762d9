"""Environments for CAL's stratified risk: which samples of a batch form one group.

* ``"random"``: the paper's choice, ``n_envs`` random groups per batch. Measured to carry almost
  no signal on 32-sample batches (docs/PRIOR_FINDINGS); kept as the faithful baseline.
* ``"anion"``: the most electronegative element of each structure (oxides, fluorides, sulfides,
  nitrides, ... and the element itself for elemental solids): chemically meaningful groups of
  useful size, computed from the graph's node types with no user work. The default.
* ``"chemsys"``: the chemical system (e.g. ``"Li-O-P"``); fine-grained, best for large batches.
* ``"cluster"``: K-means clusters of the training set's compositions (the descriptor of
  :func:`matgl_cal.splits.composition_features`): the kind of groups leave-one-cluster-out
  splits hold out, so the stratified risk sees the heterogeneity a cluster shift tests.
* a sequence of per-sample labels (any hashables, one per training sample, in dataset order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pymatgen.core import Composition, Element

__all__ = ["BUILTIN_ENVIRONMENTS", "environment_labels", "structure_group"]

BUILTIN_ENVIRONMENTS = ("random", "anion", "chemsys", "cluster")


def structure_group(symbols: Sequence[str], kind: str) -> str:
    """Group key of one structure from its element symbols.

    Args:
        symbols: Element symbols of the structure's atoms (repeats allowed).
        kind: ``"anion"`` or ``"chemsys"``.

    Returns:
        The most electronegative element (``"anion"``) or the sorted ``-``-joined elements (``"chemsys"``).
    """
    unique = sorted(set(symbols))
    if kind == "chemsys":
        return "-".join(unique)
    if kind == "anion":

        def electronegativity(sym: str) -> float:
            x = Element(sym).X
            return float(x) if x == x else 0.0  # NaN for noble gases

        return max(unique, key=lambda s: (electronegativity(s), s))
    raise ValueError(f"kind must be 'anion' or 'chemsys', got {kind!r}")


def environment_labels(
    dataset: Any,
    element_types: Sequence[str],
    environments: Any,
    *,
    n_clusters: int = 4,
    seed: int = 0,
) -> np.ndarray | None:
    """Integer environment id per dataset sample (dataset order), or None for ``"random"``.

    Args:
        dataset: A MatGL dataset (items are ``(graph, lattice, state_attr, labels)`` tuples, the graph
            having ``node_type`` indices into ``element_types``), or any sized dataset when
            ``environments`` is a label sequence.
        element_types: The model's element types.
        environments: ``"random"``, ``"anion"``, ``"chemsys"``, ``"cluster"`` or a sequence of
            per-sample labels.
        n_clusters: Number of K-means clusters for ``"cluster"`` (>= 2, at most the number of samples).
        seed: Seed of the K-means initialisation for ``"cluster"``.

    Returns:
        ``(len(dataset),)`` int64 array, or None for random environments.

    Raises:
        ValueError: Unknown name, a label sequence whose length differs from the dataset's, or more
            clusters than samples.
    """
    if isinstance(environments, str):
        if environments == "random":
            return None
        if environments not in BUILTIN_ENVIRONMENTS:
            raise ValueError(
                f"environments must be one of {BUILTIN_ENVIRONMENTS} or a sequence of per-sample labels, "
                f"got {environments!r}"
            )
        symbols = [_sample_symbols(dataset[i][0], element_types) for i in range(len(dataset))]
        if environments == "cluster":
            return _composition_clusters(symbols, n_clusters, seed)
        labels: Sequence[Any] = [structure_group(sym, environments) for sym in symbols]
    else:
        labels = list(environments)
        if len(labels) != len(dataset):
            raise ValueError(
                f"environments has {len(labels)} labels but the training dataset has {len(dataset)} samples; "
                "give one label per training sample, in dataset order"
            )
    _, ids = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
    return ids.astype(np.int64)


def _sample_symbols(graph: Any, element_types: Sequence[str]) -> list[str]:
    node_type = graph.node_type
    if isinstance(node_type, torch.Tensor):
        node_type = node_type.tolist()
    return [element_types[int(t)] for t in node_type]


def _composition_clusters(symbols: Sequence[Sequence[str]], n_clusters: int, seed: int) -> np.ndarray:
    from matgl_cal.splits._makers import _kmeans_labels, composition_features

    compositions = [Composition(dict(Counter(sym))) for sym in symbols]
    features = composition_features(compositions)
    name = "n_clusters (the callback's n_cluster_envs)"
    return _kmeans_labels(features, n_clusters, int(seed), name=name).astype(np.int64)
