"""Dataset adapters: real benchmark files -> chat prompt records plus the fields their grader reads.

``load_dataset(name, split)`` returns OpenAI RFT records (``{"messages": [...], <fields>...}``);
``DATASETS[name].grader`` is the grader spec that fits them. Files are read from a local path (by
default under RAPID_DATASETS_DIR, which defaults to ``shared/datasets`` beside the repository);
``hf:<id>`` sources go through the ``datasets`` library when it is installed and a hub answers.
``validate_records_for_grader`` is the upload check: each line must carry every field the grader
reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapid_core.errors import DatasetError, GraderError
from rapid_core.registry import Registry
from rapid_core.settings import core_settings

Record = dict[str, Any]
MATH_SYSTEM = "Solve the problem. Put the final answer in \\boxed{}."
GSM8K_SYSTEM = "Solve the problem step by step. End with '#### <number>'."
CODE_SYSTEM = "You are an expert Python programmer. Reply with the code in one ```python block."
LEAN_SYSTEM = "Complete the Lean 4 proof. Reply with the proof in one ```lean block."
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def datasets_dir() -> Path:
    return core_settings().datasets_dir


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


@dataclass(frozen=True)
class Adapter:
    load: Callable[[str, str | None], list[Record]]  # (split, source) -> records
    splits: tuple[str, ...]
    grader: dict[str, Any]


DATASETS: Registry[Adapter] = Registry("dataset")


def load_dataset(
    name: str, split: str = "test", source: str | None = None, limit: int | None = None
) -> list[Record]:
    """Records of one split; ``source`` is a local file, ``hf:<id>``, or None for the shared copy."""
    adapter = DATASETS.get(name, "dataset")
    if split not in adapter.splits:
        raise DatasetError(f"dataset {name!r} has splits {list(adapter.splits)}, not {split!r}")
    records = adapter.load(split, source)
    return records[:limit] if limit is not None else records


def read_rows(source: str | None, default: str, hf_split: str | None = None) -> list[Record]:
    if source and source.startswith("hf:"):
        return _hub_rows(source[3:], hf_split or "test")
    path = Path(source) if source else datasets_dir() / default
    if path.suffix == ".json":
        if not path.is_file():
            raise DatasetError(f"dataset file {str(path)!r} does not exist")
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: expected a JSON array of records")
        return rows
    return read_jsonl(path)


def _hub_rows(dataset_id: str, split: str) -> list[Record]:
    try:
        import datasets as hf
    except ImportError:
        raise DatasetError(
            f"hf:{dataset_id} needs the 'datasets' package, which is not installed; "
            "pass a local file path instead"
        ) from None
    try:
        return [dict(r) for r in hf.load_dataset(dataset_id, split=split)]
    except Exception as err:  # offline, unknown id, missing split: all the same to the caller
        raise DatasetError(f"could not load hf:{dataset_id} split {split!r}: {err}") from None


def _need(row: Record, n: int, *fields: str) -> None:
    for f in fields:
        if f not in row:
            raise DatasetError(f"record {n} lacks field {f!r}")


# --- math ----------------------------------------------------------------------------------------


def last_boxed(solution: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces matched."""
    start = max(solution.rfind("\\boxed{"), solution.rfind("\\fbox{"))
    if start < 0:  # a few MATH solutions write "\boxed 2"
        bare = re.findall(r"\\boxed ([^\s$]+)", solution)
        return bare[-1] if bare else None
    i = solution.index("{", start) + 1
    depth = 1
    for j in range(i, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[j], 0)
        if depth == 0:
            return solution[i:j]
    return None


def _gsm8k(split: str, source: str | None) -> list[Record]:
    rows = read_rows(source, f"gsm8k/{split}.jsonl", "main")
    out = []
    for n, r in enumerate(rows, 1):
        _need(r, n, "question", "answer")
        final = r["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        out.append({"messages": chat(GSM8K_SYSTEM, r["question"]), "answer": final, "solution": r["answer"]})
    return out


def _math(files: dict[str, str]) -> Callable[[str, str | None], list[Record]]:
    def load(split: str, source: str | None) -> list[Record]:
        out = []
        for n, r in enumerate(read_rows(source, files[split], split), 1):
            _need(r, n, "problem")
            answer = r.get("answer") or last_boxed(r.get("solution", ""))
            if answer is None:
                raise DatasetError(f"record {n} has neither 'answer' nor a \\boxed{{}} in 'solution'")
            extra = {k: r[k] for k in ("level", "type", "subject", "unique_id") if k in r}
            out.append({"messages": chat(MATH_SYSTEM, r["problem"]), "answer": answer, **extra})
        return out

    return load


DATASETS.register("gsm8k")(
    Adapter(_gsm8k, ("train", "test"), {"type": "math", "reference": "{{item.answer}}"})
)
DATASETS.register("math")(
    Adapter(
        _math({"train": "math/train.derived.jsonl", "test": "math/test.jsonl"}),
        ("train", "test"),
        {"type": "math", "reference": "{{item.answer}}"},
    )
)
DATASETS.register("math500")(
    Adapter(
        _math({"test": "math500/test.jsonl"}), ("test",), {"type": "math", "reference": "{{item.answer}}"}
    )
)

# --- code ----------------------------------------------------------------------------------------


def mbpp_prompt(text: str, tests: list[str]) -> str:
    return f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests)


def _mbpp(default: str, text_field: str) -> Callable[[str, str | None], list[Record]]:
    def load(split: str, source: str | None) -> list[Record]:
        lo, hi = MBPP_SPLITS[split]
        out = []
        for n, r in enumerate(read_rows(source, default, split), 1):
            _need(r, n, "task_id", text_field, "test_list")
            if not lo <= int(r["task_id"]) <= hi:
                continue
            fields = {k: r[k] for k in ("task_id", "test_list", "test_setup_code", "test_imports") if k in r}
            prompt = mbpp_prompt(r[text_field], r["test_list"])
            out.append({"messages": chat(CODE_SYSTEM, prompt), **fields, "solution": r.get("code", "")})
        return out

    return load


# 20 s, not code_tests' 10 s default: the slowest reference solution (task 123, amicable numbers to
# 9,999) took 6.1 s on a 2-core Zen 3 with one core busy and went over 10 s when graded beside other work.
MBPP_GRADER = {"type": "code_tests", "style": "mbpp", "timeout": 20.0}
DATASETS.register("mbpp")(Adapter(_mbpp("mbpp/mbpp.jsonl", "text"), tuple(MBPP_SPLITS), MBPP_GRADER))
DATASETS.register("mbpp_sanitized")(
    Adapter(_mbpp("mbpp/sanitized-mbpp.json", "prompt"), tuple(MBPP_SPLITS), MBPP_GRADER)
)

_PLUS_FIELDS = ("task_id", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")


def _mbpp_plus(split: str, source: str | None) -> list[Record]:
    out = []
    for n, r in enumerate(read_rows(source, "mbpp_plus/MbppPlus.jsonl"), 1):
        _need(r, n, *_PLUS_FIELDS, "prompt")
        text = r["prompt"].strip().strip("'\"").strip()
        example = r.get("assertion", "").strip().splitlines()[:1]
        user = mbpp_prompt(text, example) + f"\nName the function {r['entry_point']}."
        out.append({"messages": chat(CODE_SYSTEM, user), **{k: r[k] for k in _PLUS_FIELDS}})
    return out


def _humaneval(split: str, source: str | None) -> list[Record]:
    if source is None:
        raise DatasetError(
            "humaneval needs a source: a HumanEval-format JSONL file (task_id, prompt, "
            "canonical_solution, test, entry_point) or hf:<id>"
        )
    out = []
    for n, r in enumerate(read_rows(source, "", "test"), 1):
        _need(r, n, "task_id", "prompt", "test", "entry_point")
        user = f"Complete this Python function:\n\n```python\n{r['prompt']}```"
        fields = {
            k: r[k] for k in ("task_id", "prompt", "test", "entry_point", "canonical_solution") if k in r
        }
        out.append({"messages": chat(CODE_SYSTEM, user), **fields})
    return out


DATASETS.register("mbpp_plus")(Adapter(_mbpp_plus, ("test",), {"type": "code_tests", "style": "evalplus"}))
DATASETS.register("humaneval")(Adapter(_humaneval, ("test",), {"type": "code_tests", "style": "humaneval"}))

# --- lean ----------------------------------------------------------------------------------------


def _minif2f(split: str, source: str | None) -> list[Record]:
    out = []
    for n, r in enumerate(read_rows(source, "minif2f/minif2f.jsonl", split), 1):
        _need(r, n, "name", "split", "formal_statement")
        if r["split"] != split:
            continue
        user = (r.get("informal_prefix") or "") + r["formal_statement"]
        fields = {k: r.get(k, "") for k in ("name", "formal_statement", "header")}
        out.append({"messages": chat(LEAN_SYSTEM, user), **fields})
    return out


DATASETS.register("minif2f")(Adapter(_minif2f, ("valid", "test"), {"type": "lean"}))

# --- upload validation ---------------------------------------------------------------------------

_WORD = re.compile(r"^[A-Za-z_]\w*$")


def validate_records_for_grader(records: Iterable[Record], grader: Any) -> None:
    """Raise DatasetError naming the first line (1-based) that lacks ``messages`` or a field the
    grader reads. ``grader`` is a Grader or a grader spec."""
    if isinstance(grader, dict):
        from rapid_core.graders import build_grader

        try:
            grader = build_grader(grader)
        except GraderError as err:
            raise DatasetError(f"invalid grader: {err}") from None
    needed = sorted(grader.required_fields())
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise DatasetError(f"line {n}: a record must be a JSON object")
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DatasetError(f"line {n}: missing field 'messages' (a non-empty list of chat messages)")
        for field in needed:
            if field not in record:
                raise DatasetError(f"line {n}: missing field {field!r}, which the grader reads")
