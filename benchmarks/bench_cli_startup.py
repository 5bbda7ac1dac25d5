"""How fast commands that need no model start, against ``python -c "import torch"`` in the same run.

    python benchmarks/bench_cli_startup.py [--runs 7] [--json]

Each command runs ``--runs`` times, interleaved with the torch import (so load changes hit both
alike), after one warm-up run each (file cache). Reports the median wall time, the ratio to the
torch import and the machine's load average before and after; the target is
``oringscan db --help`` <= 0.35 x ``import torch`` on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET = ("oringscan db --help", 0.35)


def _oringscan() -> list[str]:
    """The installed console script (what users run), else the module."""
    script = shutil.which("oringscan")
    return [script] if script else [sys.executable, "-m", "oringscan.cli.main"]


def commands() -> dict[str, list[str]]:
    cli = _oringscan()
    return {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "oringscan db --help": [*cli, "db", "--help"],
        "oringscan --help": [*cli, "--help"],
        "oringscan config show": [*cli, "config", "show"],
    }


def wall(argv: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    todo = commands()
    load_before = os.getloadavg()
    for argv in todo.values():  # warm-up: file cache, .pyc
        wall(argv)
    times: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(args.runs):
        for name, argv in todo.items():
            times[name].append(wall(argv))
    load_after = os.getloadavg()
    torch_s = statistics.median(times['python -c "import torch"'])
    rows = {
        name: {
            "median_s": round(statistics.median(t), 3),
            "min_s": round(min(t), 3),
            "ratio_to_torch": round(statistics.median(t) / torch_s, 3),
        }
        for name, t in times.items()
    }
    result = {
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "commands": rows,
        "target": {
            "command": TARGET[0],
            "max_ratio": TARGET[1],
            "met": rows[TARGET[0]]["ratio_to_torch"] <= TARGET[1],
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.runs} runs each, {os.cpu_count()} CPUs, load average before {load_before[0]:.2f} "
        f"after {load_after[0]:.2f} (1 min)"
    )
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'x import torch':>15}")
    for name, row in rows.items():
        print(f"{name:<28} {row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['ratio_to_torch']:>15.3f}")
    verdict = "met" if result["target"]["met"] else "NOT met"
    print(f"target {TARGET[0]} <= {TARGET[1]} x import torch: {verdict}")


if __name__ == "__main__":
    main()
