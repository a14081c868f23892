"""Tasks: where prompts come from. Each task yields records in the OpenAI RFT line format
(``{"messages": [...], <grader fields>...}``), a train and a held-out split, and its default grader.

Built in: ``arithmetic`` (generated, no download), ``gsm8k`` and ``math`` (JSONL from a path), and
``jsonl`` (records that already carry ``messages``, as uploaded to the service).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapid_core.config import TrainConfig
from rapid_core.errors import ConfigError, DatasetError
from rapid_core.registry import Registry

Record = dict[str, Any]

MATH_SYSTEM = "Solve the problem. Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class TaskData:
    train: list[Record]
    eval: list[Record]
    grader: dict[str, Any]


TASKS: Registry[Callable[[TrainConfig], TaskData]] = Registry("task")


def chat(system: str | None, user: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def read_jsonl(path: str | Path) -> list[Record]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file {str(p)!r} does not exist")
    rows = []
    with p.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{p}: line {n} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{p}: line {n} is not a JSON object")
            rows.append(row)
    return rows


# --- arithmetic ---------------------------------------------------------------------------------

ARITHMETIC_OPTIONS = {"digits": 2, "max_value": 20, "operators": "+-", "n_train": 5000, "n_eval": 500}
# Measured on SmolLM2-135M-Instruct: this wording gets the most direct answers from the base model.
ARITHMETIC_PROMPT = "Calculate {a} {op} {b}. Give only the final number, no words."


def _is_held_out(a: int, op: str, b: int) -> bool:
    # Membership depends only on the problem, never on the seed: train and held-out never overlap.
    return hashlib.sha256(f"{a}{op}{b}".encode()).digest()[0] < 26  # ~10% of all problems


def arithmetic_problems(n: int, *, held_out: bool, seed: int, hi: int, operators: str) -> list[tuple[int, str, int]]:
    """Up to ``n`` distinct problems with operands in 0..hi, from one side of the held-out split."""
    space = [(a, op, b) for a in range(hi + 1) for op in operators for b in range(hi + 1)]
    if len(space) > 200_000:  # large spaces: rejection-sample instead of enumerating
        rng = random.Random(f"arith-{seed}-{held_out}")
        found: dict[tuple[int, str, int], None] = {}
        for _ in range(n * 50):
            p = (rng.randint(0, hi), rng.choice(operators), rng.randint(0, hi))
            if _is_held_out(*p) == held_out:
                found[p] = None
                if len(found) == n:
                    break
        return list(found)
    side = [p for p in space if _is_held_out(*p) == held_out]
    random.Random(f"arith-{seed}-{held_out}").shuffle(side)
    return side[:n]


def _arith_record(a: int, op: str, b: int, system: str | None) -> Record:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"messages": chat(system, ARITHMETIC_PROMPT.format(a=a, op=op, b=b)), "answer": str(value)}


@TASKS.register("arithmetic")
def arithmetic_task(cfg: TrainConfig) -> TaskData:
    """Generated problems ``a op b``. Options: ``digits`` (operands below 10**digits) or
    ``max_value`` (operands 0..max_value, wins when set; null to use digits), ``operators`` from "+-*",
    ``n_train``, ``n_eval``."""
    unknown = set(cfg.task_options) - set(ARITHMETIC_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown arithmetic option(s) {sorted(unknown)}", "task_options")
    opts = {**ARITHMETIC_OPTIONS, **cfg.task_options}
    if not 1 <= int(opts["digits"]) <= 6:
        raise ConfigError("digits must be 1..6", "task_options.digits")
    if opts["max_value"] is not None and not 1 <= int(opts["max_value"]) <= 10**6:
        raise ConfigError("max_value must be 1..1000000", "task_options.max_value")
    if not opts["operators"] or set(opts["operators"]) - set("+-*"):
        raise ConfigError("operators must be drawn from '+-*'", "task_options.operators")
    hi = int(opts["max_value"]) if opts["max_value"] is not None else 10 ** int(opts["digits"]) - 1
    kw = {"hi": hi, "operators": opts["operators"]}
    train = arithmetic_problems(int(opts["n_train"]), held_out=False, seed=cfg.seed, **kw)
    held = arithmetic_problems(int(opts["n_eval"]), held_out=True, seed=0, **kw)
    return TaskData(
        train=[_arith_record(*p, cfg.system_prompt) for p in train],
        eval=[_arith_record(*p, cfg.system_prompt) for p in held],
        grader={"type": "numeric", "reference": "{{item.answer}}"},
    )


# --- datasets from files -------------------------------------------------------------------------


def _split_from(path: str, eval_path: str | None, make: Callable[[Record], Record]) -> tuple[list, list]:
    """Train from ``path``; held-out from ``eval_path`` or, failing that, a test.jsonl beside it."""
    train = [make(r) for r in read_jsonl(path)]
    if eval_path is None:
        sibling = Path(path).with_name("test.jsonl")
        eval_path = str(sibling) if sibling.is_file() and sibling != Path(path) else None
    if eval_path is None:  # one file only: hold out a deterministic tenth
        held = [r for i, r in enumerate(train) if i % 10 == 0]
        return [r for i, r in enumerate(train) if i % 10], held
    return train, [make(r) for r in read_jsonl(eval_path)]


def _need(row: Record, *fields: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise DatasetError(f"record lacks field(s) {missing}: {json.dumps(row)[:120]}")


@TASKS.register("gsm8k")
def gsm8k_task(cfg: TrainConfig) -> TaskData:
    system = cfg.system_prompt if cfg.system_prompt is not None else (
        "Solve the problem step by step. End with '#### <number>'."
    )

    def make(row: Record) -> Record:
        _need(row, "question", "answer")
        final = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        return {"messages": chat(system, row["question"]), "answer": final, "solution": row["answer"]}

    train, held = _split_from(cfg.data_path or "", cfg.eval_path, make)
    return TaskData(train, held, {"type": "numeric", "reference": "{{item.answer}}"})


@TASKS.register("math")
def math_task(cfg: TrainConfig) -> TaskData:
    system = cfg.system_prompt if cfg.system_prompt is not None else MATH_SYSTEM

    def make(row: Record) -> Record:
        _need(row, "problem")
        answer = row.get("answer") or row.get("solution")
        if answer is None:
            raise DatasetError(f"MATH record lacks 'answer' and 'solution': {json.dumps(row)[:120]}")
        return {"messages": chat(system, row["problem"]), "answer": answer}

    train, held = _split_from(cfg.data_path or "", cfg.eval_path, make)
    return TaskData(train, held, {"type": "math", "reference": "{{item.answer}}"})


@TASKS.register("jsonl")
def jsonl_task(cfg: TrainConfig) -> TaskData:
    def make(row: Record) -> Record:
        _need(row, "messages")
        return row

    train, held = _split_from(cfg.data_path or "", cfg.eval_path, make)
    if cfg.grader is None:
        raise ConfigError("task jsonl needs a grader spec", "grader")
    return TaskData(train, held, cfg.grader)


def load_task(cfg: TrainConfig) -> TaskData:
    data = TASKS.get(cfg.task, "task")(cfg)
    if not data.train:
        raise DatasetError(f"task {cfg.task!r} has no training records")
    grader = cfg.grader if cfg.grader is not None else data.grader
    return TaskData(data.train, data.eval, grader)
