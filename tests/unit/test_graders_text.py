"""string_check, text_similarity, multi, refusals, health helpers and upload validation."""

import pytest

from rapid_core.datasets import validate_records_for_grader
from rapid_core.errors import DatasetError, GraderError
from rapid_core.graders import Grade, build_grader, checker_health, grade_latency_stats
from rapid_core.graders.multi import evaluate, parse_formula

ITEM = {"answer": "Paris", "messages": [{"role": "user", "content": "Capital of France?"}]}


@pytest.mark.parametrize(
    "operation, output, score",
    [
        ("eq", "Paris", 1),
        ("eq", "paris", 0),
        ("ne", "Lyon", 1),
        ("like", "It is Paris.", 1),
        ("like", "it is paris", 0),
        ("ilike", "it is PARIS", 1),
    ],
)
def test_string_check_operations(operation, output, score):
    g = build_grader(
        {
            "type": "string_check",
            "name": "s",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": operation,
        }
    )
    assert g.grade(ITEM, output).score == score
    assert g.required_fields() == {"answer"}


def test_string_check_rejects_unknown_operation_and_missing_field():
    with pytest.raises(GraderError, match="operation"):
        build_grader(
            {"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "re"}
        )
    g = build_grader({"type": "string_check", "reference": "{{item.nope}}", "operation": "eq"})
    assert g.grade(ITEM, "Paris").status == "error"


@pytest.mark.parametrize(
    "metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_l", "rouge_5"]
)
def test_text_similarity_is_one_for_identical_text_and_lower_otherwise(metric):
    g = build_grader(
        {
            "type": "text_similarity",
            "name": "t",
            "input": "{{sample.output_text}}",
            "reference": "{{item.ref}}",
            "evaluation_metric": metric,
        }
    )
    ref = "the quick brown fox jumps over the lazy dog near the river bank"
    item = {"ref": ref}
    assert g.grade(item, ref).score == pytest.approx(1.0)
    assert 0.0 <= g.grade(item, "a slow red fox sleeps under the lazy dog").score < 1.0


def test_text_similarity_worked_values():
    def score(metric, out, ref):
        g = build_grader({"type": "text_similarity", "reference": "{{item.r}}", "evaluation_metric": metric})
        return g.grade({"r": ref}, out).score

    assert score("fuzzy_match", "kitten", "sitting") == pytest.approx(
        1 - 5 / 13
    )  # Indel distance 5 over 13 chars
    assert score("rouge_1", "the cat sat", "the cat sat down") == pytest.approx(2 * 1.0 * 0.75 / 1.75)


@pytest.mark.parametrize("metric, why", [("cosine", "embedding"), ("meteor", "unavailable|WordNet|wordnet")])
def test_text_similarity_refuses_what_it_cannot_compute(metric, why):
    try:
        build_grader({"type": "text_similarity", "reference": "x", "evaluation_metric": metric})
    except GraderError as err:
        assert any(w in str(err) for w in why.split("|"))
    else:
        assert metric == "meteor"  # allowed only where NLTK's WordNet data is installed


def test_multi_combines_named_graders_with_a_formula():
    spec = {
        "type": "multi",
        "graders": {
            "exact": {"type": "string_check", "reference": "{{item.answer}}", "operation": "eq"},
            "close": {
                "type": "text_similarity",
                "reference": "{{item.answer}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * exact + max(0, close - 0.5) / (1 + abs(-1))",
    }
    g = build_grader(spec)
    assert g.grade(ITEM, "Paris").score == pytest.approx(0.5 + 0.25)
    assert g.grade(ITEM, "Pariss").score == pytest.approx((10 / 11 - 0.5) / 2)
    assert g.required_fields() == {"answer"}


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os')",
        "a.b",
        "a ** 2",
        "open(a)",
        "min(a, key=b)",
        "'x'",
        "a if a else b",
        "lambda: 1",
        "[a]",
    ],
)
def test_multi_formula_parser_refuses_anything_but_arithmetic(formula):
    with pytest.raises(GraderError):
        parse_formula(formula, {"a", "b"})


def test_multi_formula_arithmetic_and_division_by_zero():
    assert evaluate(parse_formula("(a + b) * 2 - min(a, b, 3) / 4", {"a", "b"}), {"a": 1, "b": 2}) == 5.75
    g = build_grader(
        {
            "type": "multi",
            "graders": {"s": {"type": "string_check", "reference": "x", "operation": "eq"}},
            "calculate_output": "1 / s",
        }
    )
    assert g.grade({}, "y").status == "error"


@pytest.mark.parametrize("kind", ["score_model", "label_model"])
def test_llm_judges_are_refused_clearly(kind):
    with pytest.raises(GraderError, match="not supported"):
        build_grader({"type": kind, "model": "gpt-4o"})


def test_lean_is_refused_without_a_toolchain(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GraderError, match="Lean 4 toolchain"):
        build_grader({"type": "lean"})


def test_checker_health_fails_a_round_where_most_grades_are_checker_failures():
    ok = [Grade(1.0, "ok")] * 4 + [Grade(0.0, "wrong")] * 2
    assert checker_health(ok)[0]
    bad = (
        [Grade(0.0, "timeout", "wall-clock limit")] * 3
        + [Grade(0.0, "sandbox_failure", "bwrap: x")] * 2
        + ok[:4]
    )
    healthy, message = checker_health(bad)
    assert not healthy and "5 of 9" in message and "timeout=3" in message


def test_grade_latency_stats_percentiles():
    stats = grade_latency_stats([Grade(1.0, "ok", seconds=s / 100) for s in range(1, 101)])
    assert (stats["p50"], stats["p90"], stats["p99"], stats["count"]) == (0.5, 0.9, 0.99, 100)
    assert grade_latency_stats([])["count"] == 0


def test_validate_records_names_the_first_bad_line_and_field():
    grader = {"type": "code_tests", "style": "mbpp"}
    good = {"messages": [{"role": "user", "content": "x"}], "test_list": ["assert True"]}
    validate_records_for_grader([good, good], grader)
    with pytest.raises(DatasetError, match=r"line 3: missing field 'test_list'"):
        validate_records_for_grader([good, good, {"messages": good["messages"]}], grader)
    with pytest.raises(DatasetError, match=r"line 1: missing field 'messages'"):
        validate_records_for_grader([{"answer": "1"}], build_grader({"type": "math"}))
