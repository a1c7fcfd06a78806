"""`python -m benchmarks.train [dense|prune|nm|report|all]`: the CRNN compression study.

dense: train the demo CRNN (seeded), export it, ship it as frontend/models/crnn_dense.onnx.
prune: iterative global magnitude pruning with fine-tuning (20, 50, 62.5, 78%), from dense.
structured: L1 filter pruning (conv filters, LSTM units) to 50, 62.5, 78% of the weights.
nm: 2:4 pruning with fine-tuning, from dense. report: RESULTS.md section from the study JSON.
Checkpoints and non-shipped ONNX files go to the ocrc cache; needs the `train` extra (torch).
"""

from __future__ import annotations

import argparse
import logging
import time

from benchmarks.train import study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    parser.add_argument("stage", choices=("dense", "prune", "structured", "nm", "report", "all"),
                        nargs="?", default="all")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain even when a cached checkpoint of the same recipe exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    if args.stage in ("dense", "all"):
        study.run_dense(fresh=args.fresh)
    if args.stage in ("prune", "all"):
        study.run_prune(fresh=args.fresh)
    if args.stage in ("structured", "all"):
        study.run_structured(fresh=args.fresh)
    if args.stage in ("nm", "all"):
        study.run_nm(fresh=args.fresh)
    study.write_report()
    logging.getLogger("benchmarks.train").info("done in %.0f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
