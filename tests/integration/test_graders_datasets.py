"""Every grader on real benchmark rows from RAPID_DATASETS_DIR (default ../shared/datasets), and
hostile completions that must be contained and classified while this process keeps running.

MBPP+ runs a fixed quarter of its 399 tasks (every 4th): the full set takes ~95 s on 2 cores,
the quarter ~25 s, which keeps this file near three minutes there.
"""

import os
import subprocess
import sys

import pytest

from rapid_core.datasets import DATASETS, datasets_dir, load_dataset, validate_records_for_grader
from rapid_core.graders import build_grader, checker_health, grade_latency_stats, status_counts
from rapid_core.sandbox import sandbox_info


@pytest.fixture(scope="module", autouse=True)
def requirements():
    assert datasets_dir().is_dir(), f"benchmark data not found at {datasets_dir()} (set RAPID_DATASETS_DIR)"
    assert sandbox_info().backend is not None, f"no sandbox backend: {sandbox_info().reason}"


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\n"


@pytest.mark.parametrize("name", ["mbpp", "mbpp_sanitized"])
def test_every_mbpp_reference_solution_passes_and_another_tasks_solution_fails(name):
    rows = [r for split in ("prompt", "test", "validation", "train") for r in load_dataset(name, split)]
    assert len(rows) == {"mbpp": 974, "mbpp_sanitized": 427}[name]
    grader = build_grader(DATASETS.get(name).grader)
    validate_records_for_grader(rows, grader)
    grades = grader.grade_batch(rows, [fenced(r["solution"]) for r in rows])
    failed = [(r["task_id"], g.detail) for r, g in zip(rows, grades, strict=True) if g.status != "ok"]
    assert failed == []
    sample = rows[::5]
    wrong = grader.grade_batch(sample, [fenced(r["solution"]) for r in sample[1:] + sample[:1]])
    assert all(g.score == 0.0 and g.status == "wrong" for g in wrong)
    assert checker_health(grades)[0] and grade_latency_stats(grades)["p99"] < 10


def test_mbpp_plus_reference_solutions_pass_their_plus_inputs():
    rows = load_dataset("mbpp_plus")[::4]
    grader = build_grader({"type": "code_tests", "style": "evalplus"})
    grades = grader.grade_batch(rows, [fenced(r["canonical_solution"]) for r in rows])
    assert [(r["task_id"], g.detail) for r, g in zip(rows, grades, strict=True) if g.status != "ok"] == []
    assert all(
        int(g.detail.split("/")[1].split()[0]) >= len(r["base_input"])
        for r, g in zip(rows, grades, strict=True)
    )
    # A solution to a different task fails on this one's inputs.
    wrong = grader.grade_batch(rows[:10], [fenced(r["canonical_solution"]) for r in rows[1:11]])
    assert [g.status for g in wrong] == ["wrong"] * 10


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_math_reference_answers_score_one_against_themselves_and_zero_against_another(name):
    rows = load_dataset(name, "test")
    grader = build_grader(DATASETS.get(name).grader)
    own = [r.get("solution") or f"So the answer is $\\boxed{{{r['answer']}}}$." for r in rows]
    assert [i for i, g in enumerate(grader.grade_batch(rows, own)) if g.score != 1.0] == []

    def partner(i: int) -> int:  # the next record whose answer is a different string
        a = rows[i]["answer"]
        j = (i + 1) % len(rows)
        while rows[j]["answer"] in a or a in rows[j]["answer"]:
            j = (j + 1) % len(rows)
        return j

    others = [own[partner(i)] for i in range(len(rows))]
    assert [i for i, g in enumerate(grader.grade_batch(rows, others)) if g.score != 0.0] == []


def test_string_check_text_similarity_and_multi_on_gsm8k_rows():
    rows = load_dataset("gsm8k", "test")[:50]
    answers = [r["answer"] for r in rows]
    exact = {
        "type": "string_check",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
    assert [g.score for g in build_grader(exact).grade_batch(rows, answers)] == [1.0] * 50
    assert build_grader({**exact, "operation": "like"}).grade(rows[0], f"It is {answers[0]}.").score == 1.0
    sim = {"type": "text_similarity", "reference": "{{item.solution}}", "evaluation_metric": "rouge_l"}
    scores = [g.score for g in build_grader(sim).grade_batch(rows, [r["solution"] for r in rows])]
    assert scores == pytest.approx([1.0] * 50)
    multi = build_grader(
        {
            "type": "multi",
            "graders": {"math": {"type": "math"}, "exact": exact},
            "calculate_output": "0.75 * math + 0.25 * exact",
        }
    )
    worked = multi.grade_batch(rows[:2], [f"#### {answers[0]}", f"The answer is {answers[1]}, I think"])
    assert [g.score for g in worked] == [0.75, 0.75]  # right answers, neither output is the bare number


HOSTILE = {
    "endless loop": ("while True:\n    pass", {"timeout"}),
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        {"timeout"},
    ),
    "memory bomb": ("x = []\nwhile True:\n    x.append(bytearray(2**26))", {"wrong"}),
    "1 GB print": ("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 2**20)", {"wrong"}),
    "syntax error": ("def min_cost(:", {"wrong"}),
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)", {"wrong"}),
    "os._exit(0) before the tests": ("import os\nos._exit(0)", {"wrong"}),
    "kills its parent": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)",
        {"wrong"},
    ),
}


def test_hostile_code_is_contained_and_classified_while_the_caller_keeps_running(tmp_path, monkeypatch):
    row = load_dataset("mbpp", "prompt")[0]  # min_cost; every hostile program replaces its solution
    # The bombs run beside an endless loop and a fork bomb on a 2-core box: a smaller address space
    # keeps the memory bomb's page faults (1 GB of them took over 3 s on a loaded CI box) well inside
    # the wall-clock limit, so it is classified by its MemoryError, not by the clock.
    grader = build_grader({"type": "code_tests", "timeout": 6, "memory_mb": 256})
    monkeypatch.setenv("RAPID_HOSTILE_SECRET", "hunter2-8c1d")
    outside = tmp_path / "escape"
    spy = {
        "writes outside its directory": (
            f"open({str(outside)!r}, 'w').write('x')\nopen('/etc/rapid-x', 'w')",
            {"wrong"},
        ),
        "reads the caller's environment": (
            "import os, glob\nleak = 'hunter2-8c1d' in str(os.environ) or any(\n"
            "    'hunter2-8c1d' in str(open(p, 'rb').read()) for p in glob.glob('/proc/*/environ')\n"
            "    if os.access(p, os.R_OK))\ndef min_cost(*a):\n    return 8 if leak else -1",
            {"wrong"},
        ),
        "opens a socket": (
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    net = True\n"
            "except OSError:\n    net = False\ndef min_cost(*a):\n    return 8 if net else -1",
            {"wrong"},
        ),
    }
    cases = {**HOSTILE, **spy}
    grades = grader.grade_batch([row] * len(cases), [fenced(code) for code, _ in cases.values()])
    for (name, (_, allowed)), grade in zip(cases.items(), grades, strict=True):
        assert grade.status in allowed and grade.score == 0.0, (name, grade)
    assert not outside.exists() and not os.path.exists("/etc/rapid-x")
    assert "MemoryError" in grades[2].detail and "File too large" in grades[3].detail
    # This process is untouched: it still runs code, spawns processes and grades correctly.
    assert (
        subprocess.run([sys.executable, "-c", "print(2 + 2)"], capture_output=True, text=True).stdout == "4\n"
    )
    assert grader.grade(row, fenced(row["solution"])).status == "ok"
    assert status_counts(grades)["sandbox_failure"] == 0
