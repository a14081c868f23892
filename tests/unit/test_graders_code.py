"""code_tests (mbpp, humaneval, evalplus styles) and the sandboxed python grader on small cases."""

import pytest

from rapid_core.errors import GraderError
from rapid_core.graders import build_grader, extract_code

MBPP = {"test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": ""}
RIGHT = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."


def test_extract_code_takes_fenced_blocks_else_the_whole_text():
    assert extract_code(RIGHT) == "def add(a, b):\n    return a + b\n"
    assert extract_code("def f(): pass") == "def f(): pass"
    assert extract_code("```py\na = 1\n```\ntext\n```python\nb = 2\n```") == "a = 1\n\n\nb = 2\n"


def test_mbpp_style_passes_a_right_answer_and_fails_a_wrong_one():
    g = build_grader({"type": "code_tests"})
    right, wrong = g.grade_batch([MBPP, MBPP], [RIGHT, "def add(a, b):\n    return a - b"])
    assert (right.score, right.status, right.detail) == (1.0, "ok", "2/2 tests passed")
    assert (wrong.score, wrong.status) == (0.0, "wrong") and "assert add(1, 2) == 3" in wrong.detail


def test_exiting_before_the_tests_is_never_a_pass():
    g = build_grader({"type": "code_tests"})
    for code in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"):
        grade = g.grade(MBPP, code)
        assert (grade.score, grade.status) == (0.0, "wrong"), code


def test_printing_a_fake_verdict_does_not_pass():
    fake = 'print("0" * 32 + \' {"passed": 2, "total": 2}\')\nimport os\nos._exit(0)'
    assert build_grader({"type": "code_tests"}).grade(MBPP, fake).score == 0.0


def test_humaneval_style_runs_check_on_the_entry_point():
    item = {
        "prompt": 'def inc(x):\n    """x + 1"""\n',
        "entry_point": "inc",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n",
    }
    g = build_grader({"type": "code_tests", "style": "humaneval"})
    body, full, wrong = g.grade_batch(
        [item] * 3, ["    return x + 1\n", "def inc(x):\n    return x + 1", "    return x"]
    )
    assert (body.status, full.status, wrong.status) == ("ok", "ok", "wrong")


def test_evalplus_style_compares_with_the_reference_outputs_within_atol():
    item = {
        "task_id": "Mbpp/9999",
        "entry_point": "half",
        "canonical_solution": "def half(x):\n    return x / 2\n",
        "base_input": [[1], [3]],
        "plus_input": [[10**6 + 1]],
        "atol": 1e-6,
    }
    g = build_grader({"type": "code_tests", "style": "evalplus"})
    close, wrong, raises = g.grade_batch(
        [item] * 3,
        [
            "def half(x):\n    return x * 0.5 + 1e-9",
            "def half(x):\n    return x // 2",
            "def half(x):\n    raise ValueError",
        ],
    )
    assert (close.status, close.detail) == ("ok", "3/3 tests passed")
    assert wrong.status == "wrong" and "expected" in wrong.detail
    assert raises.status == "wrong"


def test_code_tests_spec_is_validated_and_a_record_without_tests_is_an_error():
    with pytest.raises(GraderError, match="style"):
        build_grader({"type": "code_tests", "style": "junit"})
    with pytest.raises(GraderError, match="timeout"):
        build_grader({"type": "code_tests", "timeout": -1})
    assert build_grader({"type": "code_tests"}).grade({"test_list": []}, RIGHT).status == "error"
    assert build_grader({"type": "code_tests", "style": "evalplus"}).required_fields() >= {
        "entry_point",
        "base_input",
    }


def test_python_grader_runs_user_source_in_the_sandbox():
    source = "def grade(sample, item):\n    return float(sample['output_text'].strip() == item['answer'])\n"
    g = build_grader({"type": "python", "name": "p", "source": source})
    yes, no = g.grade_batch([{"answer": "4"}] * 2, ["4", "5"])
    assert (yes.score, yes.status, no.score, no.status) == (1.0, "ok", 0.0, "wrong")


def test_python_grader_failures_are_classified():
    def grade(source, timeout=2):
        return build_grader({"type": "python", "source": source, "timeout": timeout}).grade({}, "x")

    assert grade("def grade(s, i):\n    raise KeyError('k')").status == "error"
    assert grade("def grade(s, i):\n    return 'high'").status == "error"
    assert grade("def grade(s, i):\n    while True: pass").status == "timeout"
    assert grade("import os\ndef grade(s, i):\n    return float('SECRET' in str(os.environ))").score == 0.0
    with pytest.raises(GraderError, match="syntax error"):
        build_grader({"type": "python", "source": "def grade(:"})
    with pytest.raises(GraderError, match="grade"):
        build_grader({"type": "python", "source": "def score(s, i): return 1"})
