"""Placement MILP on Helix's published inputs (``python -m benchmarks.milp_bench [--time-limit S]``).

For single24, 42node and 3region (LLaMA-2 70B; ``../shared/milp/*.json``, or the folder
given by ``--data`` / ``$SIM_SHARED/milp``) prints the placement's max-flow, the solver
objective, the proven upper bound, the gap, seconds, which method ran, the warm start,
and the max-flow of Helix's stored Gurobi placement under the same inputs. Reference
(README of the data): Gurobi 1289.56 / 4137.55 / 1212.18 tokens/s; an open solver
reached 2045.64 (proven optimal), >= 5441.14 and >= 1515.71.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SIM_SHARED", ROOT.parent / "shared")) / "milp"
CLUSTERS = ("single24", "42node", "3region")


def main(argv: list[str] | None = None) -> int:
    from simulator.planning.flow import max_flow, problem_from_helix_json, read_helix_placement_ini
    from simulator.planning.milp import solve_placement

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with helix-<cluster>_llama2-70b.json")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per cluster (default 60)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    header = (f"{'cluster':9} {'max-flow':>9} {'objective':>9} {'bound':>9} {'gap':>7} {'seconds':>7}  "
              f"{'warm start':>10} {'Gurobi':>8}  method")
    print(header)
    print("-" * len(header))
    missing = 0
    for name in CLUSTERS:
        path = args.data / f"helix-{name}_llama2-70b.json"
        if not path.exists():
            print(f"{name:9} (no {path})")
            missing += 1
            continue
        problem = problem_from_helix_json(path)
        res = solve_placement(problem, time_limit=args.time_limit, threads=args.threads)
        ini = args.data / "placements" / f"helix-{name}_gurobi.ini"
        gurobi = max_flow(problem, read_helix_placement_ini(ini, problem)).value if ini.exists() else float("nan")
        print(f"{name:9} {res.flow_value:9.2f} {res.objective:9.2f} {res.bound:9.2f} {res.gap:7.2%} {res.seconds:7.1f}  "
              f"{res.warm_start_value:10.2f} {gurobi:8.2f}  {res.method}")
        print(f"{'':9} status: {res.status}; warm start: {res.details.get('warm_start')}")
    return 1 if missing == len(CLUSTERS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
