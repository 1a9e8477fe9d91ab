"""``python -m experiments [NAME ...] [--jobs N]``: run the experiments (all by default) and fill the README."""

from __future__ import annotations

import argparse
import importlib
import time

EXPERIMENTS = ["fidelity_helix", "helix_offline", "helix_online", "helix_ablation", "milp_ablation", "hexgen2_mixes",
               "beyond_papers"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(EXPERIMENTS)}")
    ap.add_argument("--jobs", type=int, default=None, help="parallel runs (default: one per CPU)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown experiment {unknown[0]}; known: {', '.join(EXPERIMENTS)}")
    from .report import fill_readme

    t0 = time.monotonic()
    for name in args.names or EXPERIMENTS:
        importlib.import_module(f"experiments.{name}").run(args.jobs)
    fill_readme()
    print(f"experiments done in {time.monotonic() - t0:.0f} s; results in experiments/results, README filled")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
