"""Time the frozen-encoder fast path (``model.encode_once``) against the full forward pass, in one process.

Usage::

    MATGL_CAL_DATA=../shared/data MATGL_CAL_MODELS=../shared/models OMP_NUM_THREADS=1 \\
        python benchmarks/bench_encode_once.py [--config benchmarks/configs/dielectric_cpu_loco10_frozen_e30.toml]
        [--fold 0] [--seed 0] [--methods erm cal_in_step_every_cluster8] [--json OUT.json]

For each method, trains the same (split, fold, seed) twice from the given frozen-encoder config: once running the
whole model every step (as the committed round 12 records did) and once on encoder features computed once
(``encode_once = true``). Prints, per method, the training seconds of both, their ratio, the one-off encoding
seconds, and how far the two runs' test predictions and MAE are apart (the same training up to float rounding,
which the selected epoch can amplify). Records go to a temporary directory; nothing is written to the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

from matgl_cal.benchmark import load_config, run_one
from matgl_cal.benchmark._runner import _build_model, _Data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/configs/dielectric_cpu_loco10_frozen_e30.toml")
    parser.add_argument("--split", default="LOCO")
    parser.add_argument("--fold", default="0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["erm", "cal_in_step_every_cluster8"])
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    load_config(args.config)  # validated as the runner will read it
    base = tomllib.loads(Path(args.config).read_text())
    if base.get("model", {}).get("pretrained") is None:
        parser.error(f"--config {args.config} has no model.pretrained: the fast path needs a frozen encoder")
    with tempfile.TemporaryDirectory(prefix="matgl_cal_encode_once_") as tmp:
        configs = {}
        for label, encode in (("full", False), ("encoded", True)):
            cfg = json.loads(json.dumps(base))
            cfg["model"]["encode_once"] = encode
            cfg["output_dir"] = str(Path(tmp) / label)
            cfg["cache_dir"] = str(Path(tmp) / "cache")  # a cold encoder-feature cache
            configs[label] = cfg
        # one-off cost of the fast path: converting is shared, encoding is not
        from matgl_cal.benchmark._config import config_from_dict

        fast_cfg = config_from_dict(configs["encoded"])
        data = _Data(fast_cfg)
        parts = data.indices(fast_cfg.split(args.split), str(args.fold))
        data.graphs(np.concatenate(list(parts.values())))
        t0 = time.perf_counter()
        data.encoded(_build_model(fast_cfg))
        encode_s = time.perf_counter() - t0

        rows = []
        for method in args.methods:
            rec = {label: run_one(cfg, method, args.split, args.fold, args.seed) for label, cfg in configs.items()}
            full, fast = rec["full"], rec["encoded"]
            pf, pe = np.asarray(full["test_predictions"]["y_pred"]), np.asarray(fast["test_predictions"]["y_pred"])
            rows.append({
                "method": method,
                "full_train_s": full["train_seconds"],
                "encoded_train_s": fast["train_seconds"],
                "speedup": full["train_seconds"] / fast["train_seconds"],
                "full_test_mae": full["metrics"]["test"]["mae"],
                "encoded_test_mae": fast["metrics"]["test"]["mae"],
                "max_abs_pred_diff": float(np.max(np.abs(pf - pe))),
                "selected_epoch": [full["selected_epoch"], fast["selected_epoch"]],
                "n_train": full["n_train"],
            })
    print(f"config={args.config} split={args.split} fold={args.fold} seed={args.seed}")
    print(f"encoding {len(data.encoded(_build_model(fast_cfg)))} structures once: {encode_s:.1f} s")
    print(f"{'method':<30} {'full_s':>8} {'encoded_s':>10} {'speedup':>8} {'full_mae':>9} {'enc_mae':>9} "
          f"{'max|dpred|':>10} {'epochs':>8}")
    for r in rows:
        print(f"{r['method']:<30} {r['full_train_s']:>8.1f} {r['encoded_train_s']:>10.1f} {r['speedup']:>8.1f} "
              f"{r['full_test_mae']:>9.4f} {r['encoded_test_mae']:>9.4f} {r['max_abs_pred_diff']:>10.2e} "
              f"{str(r['selected_epoch']):>8}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": args.config, "split": args.split, "fold": args.fold, "seed": args.seed,
                   "encode_seconds": encode_s, "runs": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
