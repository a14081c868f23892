"""Checker throughput and latency: the MBPP test split (task_id 11-510) graded with its reference
solutions by the sandboxed ``code_tests`` grader, for a few pool sizes.

    python bench/graders_throughput.py [--workers 1 2 4] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapid_core.datasets import load_dataset  # noqa: E402
from rapid_core.graders import build_grader, grade_latency_stats, status_counts  # noqa: E402
from rapid_core.sandbox import SandboxPool, run_python, sandbox_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, os.cpu_count() or 2, 2 * (os.cpu_count() or 2)]
    )
    parser.add_argument("--limit", type=int, default=None, help="grade only the first N records")
    args = parser.parse_args()

    info = sandbox_info()
    if info.backend is None:
        sys.exit(f"no sandbox backend: {info.reason}")
    rows = load_dataset("mbpp", "test", limit=args.limit)
    outputs = [f"```python\n{r['solution']}\n```" for r in rows]
    empty = [run_python("pass").seconds for _ in range(20)]
    print(
        f"backend={info.backend} cpus={os.cpu_count()} records={len(rows)} "
        f"empty-program round trip p50={sorted(empty)[10] * 1000:.0f} ms"
    )
    print(f"{'workers':>7} {'programs/s':>10} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7}  statuses")
    for workers in args.workers:
        pool = SandboxPool(workers)
        grader = build_grader({"type": "code_tests", "style": "mbpp"})
        grader.pool = pool
        start = time.perf_counter()
        grades = grader.grade_batch(rows, outputs)
        wall = time.perf_counter() - start
        pool.close()
        lat = grade_latency_stats(grades)
        counts = {k: v for k, v in status_counts(grades).items() if v}
        print(
            f"{workers:>7} {len(rows) / wall:>10.1f} {lat['p50']:>7.3f} {lat['p90']:>7.3f} {lat['p99']:>7.3f}  {counts}"
        )


if __name__ == "__main__":
    main()
