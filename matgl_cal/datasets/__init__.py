"""Datasets (structures + targets), OOD folds and cached MatGL graph conversion.

Data files are looked up in ``data_dir`` (argument), else ``$MATGL_CAL_DATA``, else
``~/.cache/matgl_cal/data``; see ``PROVENANCE.md`` of the shared data folder for what each file is.
"""

from __future__ import annotations

from matgl_cal.datasets._folds import FAMILIES, MATBENCH_CV, OODFolds, load_matbench_cv_folds, load_ood_folds
from matgl_cal.datasets._graph_cache import CachedGraphDataset, graph_cache_key, graphs_for, structure_fingerprint
from matgl_cal.datasets._loaders import (
    CACHE_ENV_VAR,
    DATA_ENV_VAR,
    StructureDataset,
    dataset_path,
    load_dataset,
    resolve_cache_dir,
    resolve_data_dir,
    sha256_file,
)
from matgl_cal.datasets._registry import (
    DataFile,
    DatasetInfo,
    get_dataset_info,
    list_datasets,
    register_dataset,
    unregister_dataset,
)
from matgl_cal.splits import Split

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "FAMILIES",
    "MATBENCH_CV",
    "CachedGraphDataset",
    "DataFile",
    "DatasetInfo",
    "OODFolds",
    "Split",
    "StructureDataset",
    "dataset_path",
    "get_dataset_info",
    "graph_cache_key",
    "graphs_for",
    "list_datasets",
    "load_dataset",
    "load_matbench_cv_folds",
    "load_ood_folds",
    "register_dataset",
    "resolve_cache_dir",
    "resolve_data_dir",
    "sha256_file",
    "structure_fingerprint",
    "unregister_dataset",
]
