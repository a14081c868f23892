"""Tasks: where prompts come from. Each task yields records in the OpenAI RFT line format
(``{"messages": [...], <grader fields>...}``), a train and a held-out split, and its default grader.

Built in: ``arithmetic`` (generated, no download) and ``jsonl`` (records that already carry
``messages``, as uploaded to the service); every dataset adapter of ``rapid_core.datasets``
(gsm8k, math, math500, mbpp, mbpp_sanitized, mbpp_plus, humaneval, minif2f) is a task too.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapid_core.config import RunPaths, TrainConfig
from rapid_core.datasets import DATASETS, Record, chat, read_jsonl
from rapid_core.errors import ConfigError, DatasetError
from rapid_core.registry import Registry


@dataclass(frozen=True)
class TaskData:
    train: list[Record]
    eval: list[Record]
    grader: dict[str, Any]


TASKS: Registry[Callable[[TrainConfig, RunPaths], TaskData]] = Registry("task")


# --- arithmetic ---------------------------------------------------------------------------------

# Measured on SmolLM2-135M-Instruct: this wording gets the most direct answers from the base model.
ARITHMETIC_PROMPT = "Calculate {a} {op} {b}. Give only the final number, no words."
ARITHMETIC_OPTIONS = {
    "digits": 2,
    "max_value": 20,
    "operators": "+-",
    "n_train": 5000,
    "n_eval": 500,
    "prompt": ARITHMETIC_PROMPT,
}


def _is_held_out(a: int, op: str, b: int) -> bool:
    # Membership depends only on the problem, never on the seed: train and held-out never overlap.
    return hashlib.sha256(f"{a}{op}{b}".encode()).digest()[0] < 26  # ~10% of all problems


def arithmetic_problems(
    n: int, *, held_out: bool, seed: int, hi: int, operators: str
) -> list[tuple[int, str, int]]:
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


def _arith_record(a: int, op: str, b: int, system: str | None, prompt: str) -> Record:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"messages": chat(system, prompt.format(a=a, op=op, b=b)), "answer": str(value)}


@TASKS.register("arithmetic")
def arithmetic_task(cfg: TrainConfig, paths: RunPaths | None = None) -> TaskData:
    """Generated problems ``a op b``. Options: ``digits`` (operands below 10**digits) or
    ``max_value`` (operands 0..max_value, wins when set; null to use digits), ``operators`` from "+-*",
    ``n_train``, ``n_eval``, ``prompt`` (the user message, with ``{a}``, ``{op}`` and ``{b}``; e.g.
    "Calculate {a} {op} {b}. Explain each step, then give the final number." for long completions)."""
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
    prompt = str(opts["prompt"])
    try:
        prompt.format(a=1, op="+", b=2)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"prompt may only use {{a}}, {{op}} and {{b}} ({e!r})", "task_options.prompt"
        ) from e
    if any(field not in prompt for field in ("{a}", "{op}", "{b}")):
        raise ConfigError("prompt must contain {a}, {op} and {b}", "task_options.prompt")
    hi = int(opts["max_value"]) if opts["max_value"] is not None else 10 ** int(opts["digits"]) - 1
    kw = {"hi": hi, "operators": opts["operators"]}
    train = arithmetic_problems(int(opts["n_train"]), held_out=False, seed=cfg.seed, **kw)
    held = arithmetic_problems(int(opts["n_eval"]), held_out=True, seed=0, **kw)
    return TaskData(
        train=[_arith_record(*p, cfg.system_prompt, prompt) for p in train],
        eval=[_arith_record(*p, cfg.system_prompt, prompt) for p in held],
        grader={"type": "numeric", "reference": "{{item.answer}}"},
    )


# --- records from files --------------------------------------------------------------------------


def _split_from(path: str, eval_path: str | None, make: Callable[[Record], Record]) -> tuple[list, list]:
    """Train from ``path``; held-out from ``eval_path`` or, failing that, a deterministic tenth."""
    train = [make(r) for r in read_jsonl(path)]
    if eval_path is None:
        return [r for i, r in enumerate(train) if i % 10], [r for i, r in enumerate(train) if i % 10 == 0]
    return train, [make(r) for r in read_jsonl(eval_path)]


@TASKS.register("jsonl")
def jsonl_task(cfg: TrainConfig, paths: RunPaths) -> TaskData:
    def make(row: Record) -> Record:
        if "messages" not in row:
            raise DatasetError(f"record lacks field 'messages': {json.dumps(row)[:120]}")
        return row

    if not paths.data_path:
        raise ConfigError("task 'jsonl' needs data_path, the records file", "data_path")
    train, held = _split_from(paths.data_path, paths.eval_path, make)
    if cfg.grader is None:
        raise ConfigError("task jsonl needs a grader spec", "grader")
    return TaskData(train, held, cfg.grader)


def dataset_task(cfg: TrainConfig, paths: RunPaths) -> TaskData:
    """Any adapter of rapid_core.datasets (gsm8k, math, math500, mbpp, mbpp_plus, ...): its train split
    from ``data_path`` (default: the shared copy), held-out from its test split (``eval_path``); a
    dataset with a single split holds out a deterministic tenth of it."""
    adapter = DATASETS.get(cfg.task, "task")
    if "train" in adapter.splits:
        train = adapter.load("train", paths.data_path)
        held = adapter.load("test" if "test" in adapter.splits else adapter.splits[0], paths.eval_path)
    else:
        rows = adapter.load(adapter.splits[-1], paths.data_path)
        train, held = (
            [r for i, r in enumerate(rows) if i % 10],
            [r for i, r in enumerate(rows) if i % 10 == 0],
        )
        if paths.eval_path:
            held = adapter.load(adapter.splits[-1], paths.eval_path)
    if cfg.system_prompt is not None:
        train, held = _with_system(train, cfg.system_prompt), _with_system(held, cfg.system_prompt)
    return TaskData(train, held, adapter.grader)


def _with_system(records: list[Record], system: str) -> list[Record]:
    def swap(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]

    return [{**r, "messages": swap(r["messages"])} for r in records]


def task_names() -> list[str]:
    return sorted(set(TASKS.names()) | set(DATASETS.names()))


def load_task(cfg: TrainConfig, paths: RunPaths) -> TaskData:
    """The task's train and held-out records and its grader (``cfg.grader`` overrides the task's)."""
    if cfg.task in TASKS:
        data = TASKS.get(cfg.task, "task")(cfg, paths)
    elif cfg.task in DATASETS:
        data = dataset_task(cfg, paths)
    else:
        raise ConfigError(f"unknown task {cfg.task!r}; known: {', '.join(task_names())}", "task")
    if not data.train:
        raise DatasetError(f"task {cfg.task!r} has no training records")
    grader = cfg.grader if cfg.grader is not None else data.grader
    return TaskData(data.train, data.eval, grader)
