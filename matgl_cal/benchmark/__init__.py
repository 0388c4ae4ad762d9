"""The OOD benchmark: configs, method presets, a resumable runner and the results report.

* :func:`load_config` / :func:`config_from_dict`: a strict TOML/YAML schema (unknown keys raise);
* :data:`METHOD_PRESETS`: ``erm``, ``cal_faithful``, ``cal``, ``fixed_cost``, ``extra_steps_control``;
* :func:`plan_runs`, :func:`run_one`, :func:`run_benchmark`: one JSON record per
  (method, split family, fold, seed) under ``<output_dir>/records``, resumable, shardable across
  processes (:func:`parse_shard`); :func:`prepare_benchmark` converts the graphs beforehand;
* :func:`make_report`: ``RESULTS_<name>.md`` with mean ± std, relative change vs ERM with a paired
  test, in-distribution MAE, the test error split into a common offset and the rest
  (:func:`error_decomposition`), and PNG figures.
"""

from __future__ import annotations

from matgl_cal.benchmark._config import (
    RANDOM_FAMILY,
    SPLIT_MAKER_FAMILIES,
    BenchmarkConfig,
    ModelConfig,
    SplitConfig,
    TrainingConfig,
    config_from_dict,
    load_config,
)
from matgl_cal.benchmark._errors import ERROR_DECOMPOSITION_KEYS, error_decomposition
from matgl_cal.benchmark._methods import (
    CAL_KWARGS,
    METHOD_KINDS,
    METHOD_PRESETS,
    MethodConfig,
    make_callback,
    resolve_method,
)
from matgl_cal.benchmark._report import (
    WILCOXON_MIN_N,
    load_records,
    make_report,
    paired_change_interval,
    paired_test,
    summarize,
)
from matgl_cal.benchmark._runner import (
    RECORD_SCHEMA,
    RunSpec,
    parse_shard,
    plan_runs,
    prepare_benchmark,
    record_path,
    run_benchmark,
    run_one,
)

__all__ = [
    "CAL_KWARGS",
    "ERROR_DECOMPOSITION_KEYS",
    "METHOD_KINDS",
    "METHOD_PRESETS",
    "RANDOM_FAMILY",
    "RECORD_SCHEMA",
    "SPLIT_MAKER_FAMILIES",
    "WILCOXON_MIN_N",
    "BenchmarkConfig",
    "MethodConfig",
    "ModelConfig",
    "RunSpec",
    "SplitConfig",
    "TrainingConfig",
    "config_from_dict",
    "error_decomposition",
    "load_config",
    "load_records",
    "make_callback",
    "make_report",
    "paired_change_interval",
    "paired_test",
    "parse_shard",
    "plan_runs",
    "prepare_benchmark",
    "record_path",
    "resolve_method",
    "run_benchmark",
    "run_one",
    "summarize",
]
