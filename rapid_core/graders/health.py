"""Round-level views of grades the trainer and the service report: checker health, latency."""

from __future__ import annotations

from rapid_core.graders.base import FAILURES, Grade, status_counts

UNHEALTHY_FRACTION = 0.5


def checker_health(grades: list[Grade], max_failure_fraction: float = UNHEALTHY_FRACTION) -> tuple[bool, str]:
    """(False, why) when more than half of a round's grades are timeout / error / sandbox_failure:
    the checker, not the policy, is failing, and training on its zeros would be meaningless."""
    if not grades:
        return True, "no grades"
    counts = status_counts(grades)
    failed = sum(counts[s] for s in FAILURES)
    fraction = failed / len(grades)
    summary = ", ".join(f"{s}={counts[s]}" for s in FAILURES if counts[s])
    if fraction > max_failure_fraction:
        example = next(g.detail for g in grades if g.status in FAILURES)
        return False, (
            f"the grader failed on {failed} of {len(grades)} samples ({summary}); "
            f"first failure: {example[:300]}"
        )
    return True, f"{failed} of {len(grades)} samples failed in the grader" + (
        f" ({summary})" if summary else ""
    )


def grade_latency_stats(grades: list[Grade]) -> dict[str, float]:
    """Checker latency percentiles in seconds (nearest-rank), plus mean and count."""
    times = sorted(g.seconds for g in grades)
    if not times:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}

    def pct(q: float) -> float:
        return times[min(len(times) - 1, max(0, int(-(-q * len(times) // 100)) - 1))]

    return {
        "count": len(times),
        "mean": sum(times) / len(times),
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
    }
