"""Held-out evaluation: greedy pass@1 and sampled pass@k (the unbiased estimator with n = k)."""

from __future__ import annotations

import time
from math import comb
from typing import Any

from rapid_core.engines import Engine, Sampling
from rapid_core.graders import Grader, status_counts
from rapid_core.metrics import EvalMetrics
from rapid_core.models import prompt_token_ids


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k draws from n samples (c correct) is correct."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def evaluate(
    engine: Engine,
    tokenizer,
    grader: Grader,
    records: list[dict[str, Any]],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
) -> EvalMetrics:
    """Greedy pass@1 and, when k > 1, sampled pass@k over ``records`` (pass@1 is 0 with no records)."""
    start = time.perf_counter()
    if not records:
        return EvalMetrics(0, 0.0, 0.0, {}, {}, 0.0, k)
    prompts = [prompt_token_ids(tokenizer, r["messages"]) for r in records]
    greedy = engine.generate(prompts, 1, Sampling(max_new_tokens=max_new_tokens, greedy=True))
    grades = grader.grade_batch(records, greedy.texts)
    at_k = sampled_accuracy = None
    if k > 1:
        sampling = Sampling(temperature=temperature, max_new_tokens=max_new_tokens)
        sampled = engine.generate(prompts, k, sampling)
        items = [r for r in records for _ in range(k)]
        sgrades = grader.grade_batch(items, sampled.texts)
        per_problem = [
            sum(g.status == "ok" for g in sgrades[i * k : (i + 1) * k]) for i in range(len(records))
        ]
        at_k = sum(pass_at_k(k, c, k) for c in per_problem) / len(records)
        sampled_accuracy = sum(per_problem) / (k * len(records))
    return EvalMetrics(
        problems=len(records),
        pass_at_1=sum(g.status == "ok" for g in grades) / len(records),
        mean_reward=sum(g.score for g in grades) / len(records),
        grader_status=status_counts(grades),
        example={"prompt": records[0]["messages"][-1]["content"], "completion": greedy.texts[0]},
        seconds=time.perf_counter() - start,
        k=k,
        pass_at_k=at_k,
        sampled_accuracy=sampled_accuracy,
    )
