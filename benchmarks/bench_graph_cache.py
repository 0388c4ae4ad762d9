"""Time parsing + graph conversion of a dataset (cold) and the cached reload (warm).

Usage::

    MATGL_CAL_DATA=../shared/data python benchmarks/bench_graph_cache.py [--dataset matbench_log_gvrh]
        [--cache-dir DIR] [--n-jobs 2]

The cache goes to a fresh temporary directory unless ``--cache-dir`` is given, so the first pass
is always cold. Prints one line per phase (this is a script, not library code).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from matgl.config import DEFAULT_ELEMENTS

from matgl_cal.datasets import graphs_for, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="matbench_log_gvrh")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--n-jobs", type=int, default=None, help="CIF parser processes (default: auto)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="matgl_cal_bench_")
    rows = []
    for phase in ("cold", "warm"):
        t0 = time.perf_counter()
        ds = load_dataset(args.dataset, cache_dir=cache, n_jobs=args.n_jobs, progress=False)
        t1 = time.perf_counter()
        gds = graphs_for(ds, element_types=DEFAULT_ELEMENTS, cutoff=args.cutoff, cache_dir=cache, progress=False)
        t2 = time.perf_counter()
        _ = gds[len(gds) - 1]
        rows.append((phase, len(ds), t1 - t0, t2 - t1, t2 - t0))
    print(f"dataset={args.dataset} cache={cache}")
    print(f"{'phase':<6} {'n':>7} {'load_dataset_s':>15} {'graphs_for_s':>13} {'total_s':>8}")
    for phase, n, a, b, c in rows:
        print(f"{phase:<6} {n:>7} {a:>15.2f} {b:>13.2f} {c:>8.2f}")


if __name__ == "__main__":
    main()
