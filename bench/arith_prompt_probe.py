"""How the base model answers the held-out arithmetic problems under other prompt wordings: greedy
pass@1 by kind of answer (negative, 10 or more, below 10), and how many problems of each kind get
at least one right answer in ``--samples`` draws at T = ``--temperature`` (a kind with none gives
RL no signal). docs/main-job.md reports a run.

    PYTHONPATH=$PWD .venv/bin/python bench/arith_prompt_probe.py
    PYTHONPATH=$PWD .venv/bin/python bench/arith_prompt_probe.py --adapter runs/arith/adapter \\
        --wording "Calculate {a} {op} {b}. Give only the final number, no words."
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from rapid_core.config import make_config
from rapid_core.datasets import chat
from rapid_core.engines import Sampling, make_engine
from rapid_core.graders import build_grader
from rapid_core.models import load_policy, prompt_token_ids
from rapid_core.tasks import ARITHMETIC_PROMPT, arithmetic_task

WORDINGS = [
    ARITHMETIC_PROMPT,
    "Calculate {a} {op} {b}. The result can be negative. Give only the final number, no words.",
    "Calculate {a} {op} {b}. Give only the final number (it may be negative), no words.",
    "What is {a} {op} {b}? The answer may be a negative number. Reply with the number only.",
    "Calculate {a} {op} {b}. Write the answer as an integer, with a minus sign if it is below zero. No words.",
]
PROBLEM = re.compile(r"Calculate (\d+) ([+-]) (\d+)\.")


def kind(answer: str) -> str:
    value = int(answer)
    return "negative" if value < 0 else ("10+" if value >= 10 else "0-9")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--wording", action="append", help="a prompt with {a} {op} {b} (repeatable; default: five)"
    )
    p.add_argument("--adapter", help="a LoRA adapter directory to probe instead of the base model")
    p.add_argument("--problems", type=int, default=94)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=12)
    args = p.parse_args()

    cfg = make_config(model="smollm2-135m-instruct", task="arithmetic", max_new_tokens=args.max_new_tokens)
    policy = load_policy(cfg, adapter=args.adapter, trainable=False)
    engine = make_engine(cfg, policy)
    task = arithmetic_task(cfg)
    records = task.eval[: args.problems]
    grader = build_grader(task.grader)
    operands = [PROBLEM.match(r["messages"][-1]["content"]).groups() for r in records]
    kinds = [kind(r["answer"]) for r in records]
    total = Counter(kinds)
    for wording in args.wording or WORDINGS:
        recs = [
            {**r, "messages": chat(None, wording.format(a=a, op=op, b=b))}
            for r, (a, op, b) in zip(records, operands, strict=True)
        ]
        prompts = [prompt_token_ids(policy.tokenizer, r["messages"]) for r in recs]
        greedy = engine.generate(prompts, 1, Sampling(max_new_tokens=args.max_new_tokens, greedy=True))
        right = Counter(
            k for k, g in zip(kinds, grader.grade_batch(recs, greedy.texts), strict=True) if g.status == "ok"
        )
        n = args.samples
        sampled = engine.generate(prompts, n, Sampling(args.temperature, args.max_new_tokens))
        grades = grader.grade_batch([r for r in recs for _ in range(n)], sampled.texts)
        reached = Counter(
            k for i, k in enumerate(kinds) if any(g.status == "ok" for g in grades[i * n : (i + 1) * n])
        )
        print(
            f"{wording}\n  greedy pass@1 {sum(right.values()) / len(records):.3f}; example {greedy.texts[0]!r}"
        )
        for k in total:
            print(
                f"  {k:>8}: greedy {right[k]}/{total[k]}, >= 1 of {n} samples right {reached[k]}/{total[k]}"
            )


if __name__ == "__main__":
    main()
