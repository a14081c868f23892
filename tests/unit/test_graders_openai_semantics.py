"""Grader semantics as OpenAI documents them (graders guide, RFT guide, API reference): templates,
the sample namespace, multi formulas, documented invalid graders, and limits that keep a grader
from failing on every sample. The documentation's own examples are used where there is one."""

import math

import pytest

from rapid_core.errors import GraderError
from rapid_core.graders import build_grader
from rapid_core.graders.formula import evaluate, parse_formula
from rapid_core.graders.templates import render, sample_namespace

# API reference, "Validate grader" and the StringCheckGrader / TextSimilarityGrader examples.
STRING_CHECK = {
    "type": "string_check",
    "name": "Example string check grader",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}
TEXT_SIMILARITY = {
    "type": "text_similarity",
    "name": "Example text similarity grader",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "evaluation_metric": "fuzzy_match",
}
# API reference, the PythonGrader example (its source, as a JSON string).
PYTHON_EXAMPLE = {
    "type": "python",
    "name": "Example python grader",
    "image_tag": "2025-05-08",
    "source": (
        'def grade(sample: dict, item: dict) -> float:\n    """\n    Returns 1.0 if `output_text` equals `label`, '
        'otherwise 0.0.\n    """\n    output = sample.get("output_text")\n    label = item.get("label")\n'
        "    return 1.0 if output == label else 0.0\n"
    ),
}
# RFT guide: a structured answer {"compliant": ..., "explanation": ...} checked field by field.
COMPLIANT = {
    "type": "string_check",
    "name": "compliant",
    "input": "{{sample.output_json.compliant}}",
    "reference": "{{item.compliant}}",
    "operation": "eq",
}
# Graders guide / Azure RFT guide: the multigrader example.
MULTI_EXAMPLE = {
    "type": "multi",
    "name": "Example multigrader",
    "graders": {
        "similarity_score": {
            "type": "text_similarity",
            "name": "similarity grader",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.summary }}",
            "evaluation_metric": "bleu",
        },
        "label_checker": {
            "type": "string_check",
            "name": "label grader",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.label }}",
            "operation": "eq",
        },
    },
    "calculate_output": "(similarity_score + label_checker) / 2",
}


def refused(spec: dict, field: str, match: str = "") -> GraderError:
    with pytest.raises(GraderError, match=match) as info:
        build_grader(spec)
    assert info.value.field == field, (info.value.field, str(info.value))
    return info.value


# --- templates and the sample namespace -------------------------------------------------------------


def test_documented_string_check_and_text_similarity_examples_score_as_documented():
    assert build_grader(STRING_CHECK).grade({"label": "positive"}, "positive").score == 1.0
    assert build_grader(STRING_CHECK).grade({"label": "positive"}, "Positive").score == 0.0
    similar = build_grader(TEXT_SIMILARITY).grade({"label": "kitten"}, "sitting")
    assert similar.score == pytest.approx(1 - 5 / 13) and similar.status == "wrong"


def test_rft_guide_output_json_grader_reads_the_json_sample():
    grader = build_grader(COMPLIANT)
    item = {"compliant": "yes"}
    assert grader.grade(item, '{"compliant": "yes", "explanation": "policy 3.2"}').score == 1.0
    assert grader.grade(item, '{"compliant": "no", "explanation": "none"}').score == 0.0
    not_json = grader.grade(item, "yes")  # a sample that is not JSON: that sample's error, not a crash
    assert (not_json.status, not_json.error) == ("error", "sample_parse_error")
    assert "not valid JSON" in not_json.detail


def test_json_values_render_as_json_so_booleans_compare_with_record_booleans():
    grader = build_grader({**COMPLIANT, "name": "bool"})
    assert grader.grade({"compliant": True}, '{"compliant": true}').score == 1.0


def test_array_indices_and_nested_paths_resolve():
    item = {"labels": ["neutral", "positive"], "ground_truth": {"date": "2025-05-08"}}
    assert render("{{item.labels[1]}} on {{ item.ground_truth.date }}", item, "") == "positive on 2025-05-08"
    assert render("{{sample.choices[0].message.content}}", {}, "hi") == "hi"
    assert render("{{sample.output_json.a[0].b}}", {}, '{"a": [{"b": 2}]}') == "2"
    grader = build_grader({**STRING_CHECK, "reference": "{{item.labels[1]}}"})
    assert grader.required_fields() == {"labels"}
    assert grader.grade(item, "positive").score == 1.0
    missing = grader.grade({"labels": ["only one"]}, "positive")
    assert (missing.status, missing.error) == (
        "error",
        "invalid_variable_error",
    ) and "labels[1]" in missing.detail


def test_sample_namespace_matches_the_documented_fields():
    sample = sample_namespace('{"x": 1}')
    assert sample["output_text"] == '{"x": 1}' and sample["output_json"] == {"x": 1}
    assert sample["output_tools"] == [] and sample["choices"][0]["message"]["content"] == '{"x": 1}'
    assert sample_namespace("plain text")["output_json"] is None


@pytest.mark.parametrize(
    "template, why",
    [
        ("{{item.labels[x]}}", "is not item"),
        ("{{ items.label }}", "is not item"),
        ("{{item}}", "must name"),
        ("{{sample.text}}", "sample namespace has"),
        ("{{sample.output_tools[0].function.name}}", "no tool calls"),
    ],
)
def test_templates_that_would_never_substitute_are_refused_naming_the_field(template, why):
    refused({**STRING_CHECK, "reference": template}, "reference", why)


def test_a_record_without_the_indexed_element_is_refused_by_the_trial_on_the_first_record():
    grader = build_grader({**STRING_CHECK, "reference": "{{item.labels[2]}}"})
    grader.self_check({"labels": ["a", "b", "c"]})
    with pytest.raises(GraderError, match="first training record") as info:
        grader.self_check({"labels": ["a"]})
    assert info.value.field == "reference"


# --- text_similarity ---------------------------------------------------------------------------------


def test_text_similarity_without_evaluation_metric_is_refused():
    spec = {k: v for k, v in TEXT_SIMILARITY.items() if k != "evaluation_metric"}
    refused(spec, "evaluation_metric", "required")


def test_meteor_runs_on_the_installed_wordnet_and_credits_synonyms():
    grader = build_grader({**TEXT_SIMILARITY, "evaluation_metric": "meteor"})
    reference = {"label": "the car stopped at the light"}
    assert grader.grade(reference, "the car stopped at the light").score > 0.99
    assert grader.grade(reference, "quarterly revenue grew strongly").score == 0.0
    # WordNet lists "auto" as a synonym of car, not "pear": METEOR credits only the synonym.
    synonym, other = (
        grader.grade(reference, f"the {w} stopped at the light").score for w in ("auto", "pear")
    )
    assert synonym > 0.99 and other < 0.9


@pytest.mark.parametrize("threshold", ["x", None, True, [1]])
def test_pass_threshold_of_the_wrong_type_is_refused(threshold):
    refused({**TEXT_SIMILARITY, "pass_threshold": threshold}, "pass_threshold", "pass_threshold")
    refused({**PYTHON_EXAMPLE, "pass_threshold": threshold}, "pass_threshold", "pass_threshold")
    multi = {
        "type": "multi",
        "graders": {"a": STRING_CHECK},
        "calculate_output": "a",
        "pass_threshold": threshold,
    }
    refused(multi, "pass_threshold", "pass_threshold")


# --- multi and calculate_output --------------------------------------------------------------------


def test_documented_multigrader_example_averages_its_parts():
    grader = build_grader(MULTI_EXAMPLE)
    item = {"summary": "the cat sat on the mat", "label": "the cat sat on the mat"}
    [(grade, parts)] = grader.grade_with_parts([item], ["the cat sat on the mat"])
    assert grade.score == pytest.approx(1.0) and set(parts) == {"similarity_score", "label_checker"}
    assert parts["label_checker"].score == 1.0


@pytest.mark.parametrize(
    "formula, values, expected",
    [
        ("a ^ 2", {"a": 3}, 9.0),
        ("2 * a ^ 2", {"a": 3}, 18.0),
        ("-a ^ 2", {"a": 3}, -9.0),
        ("2 ^ 3 ^ 2", {}, 512.0),
        ("min(a, b, 0.5)", {"a": 1, "b": 0.7}, 0.5),
        ("max(a, b)", {"a": 0.2, "b": 0.7}, 0.7),
        ("abs(a - b)", {"a": 0.2, "b": 0.7}, 0.5),
        ("floor(a * 10) / 10", {"a": 0.77}, 0.7),
        ("ceil(a)", {"a": 0.2}, 1.0),
        ("exp(a)", {"a": 1}, math.e),
        ("sqrt(a)", {"a": 0.25}, 0.5),
        ("log(a)", {"a": math.e}, 1.0),
    ],
)
def test_formula_operators_and_functions_are_the_documented_ones(formula, values, expected):
    tree = parse_formula(formula, {"a", "b"})
    assert evaluate(tree, {"a": 0.0, "b": 0.0, **values}) == pytest.approx(expected)


@pytest.mark.parametrize(
    "formula, why",
    [
        ("min(a)", "min\\(\\) takes 2 to 64"),
        ("abs(a, a)", "abs\\(\\) takes 1"),
        ("exp()", "exp\\(\\) takes 1"),
        (" + ".join(["a"] * 1200), "limit is 1000"),
        ("abs(" * 40 + "a" + ")" * 40, "nested deeper"),
        ("-" * 300 + "a", "nested deeper"),
        ("1e400 * a", "inf is not a finite number"),
        ("a ** 2", "write powers"),
        ("a ^ ", "not a valid formula"),
        ("a.real", "Attribute is not allowed"),
        ("a if a else b", "IfExp"),
        ("sqrt(-1 - a)", "no finite value"),
        ("a\x00", "not a valid formula"),
        ("", "must be a formula"),
    ],
)
def test_formulas_that_could_not_run_are_refused_when_built(formula, why):
    refused(
        {"type": "multi", "graders": {"a": STRING_CHECK, "b": STRING_CHECK}, "calculate_output": formula},
        "calculate_output",
        why,
    )


def test_a_formula_without_a_finite_value_for_a_sample_is_an_error_not_a_null_reward():
    grader = build_grader(
        {"type": "multi", "graders": {"a": STRING_CHECK}, "calculate_output": "exp(1000 * a)"}
    )
    ok, overflow = grader.grade_batch([{"label": "x"}] * 2, ["y", "x"])
    assert ok.score == 1.0  # a = 0
    assert (overflow.score, overflow.status, overflow.error) == (0.0, "error", "formula_parse_error")
    assert math.isfinite(overflow.score)


def test_multi_nested_in_multi_and_a_list_of_graders_are_refused():
    inner = {"type": "multi", "graders": {"a": STRING_CHECK}, "calculate_output": "a"}
    refused(
        {"type": "multi", "graders": {"m": inner}, "calculate_output": "m"}, "graders.m.type", "another multi"
    )
    # The API reference's own multi example lists its graders, which the formula cannot name.
    listed = {
        "type": "multi",
        "graders": [TEXT_SIMILARITY, STRING_CHECK],
        "calculate_output": "0.5 * text_similarity_score +  0.5 * string_check_score)",
    }
    refused(listed, "graders", "object of name")


def test_a_bad_part_is_refused_naming_its_path():
    spec = {
        "type": "multi",
        "graders": {"a": {**STRING_CHECK, "operation": "regex"}},
        "calculate_output": "a",
    }
    refused(spec, "graders.a.operation", "operation")


# --- python --------------------------------------------------------------------------------------


def test_documented_python_grader_example_runs_in_the_sandbox():
    grader = build_grader(PYTHON_EXAMPLE)
    grader.self_check()
    yes, no = grader.grade_batch([{"label": "positive"}] * 2, ["positive", "negative"])
    assert (yes.score, no.score) == (1.0, 0.0)


def test_python_grader_sees_the_documented_sample_fields():
    source = (
        "def grade(sample, item):\n    s = sample['output_json']['answer']\n"
        "    return float(s == item['answer'] and sample['output_tools'] == [] and "
        "sample['choices'][0]['message']['content'] == sample['output_text'])\n"
    )
    assert (
        build_grader({"type": "python", "source": source}).grade({"answer": 4}, '{"answer": 4}').score == 1.0
    )


@pytest.mark.parametrize(
    "source, why",
    [
        ("def grade(sample):\n    return 1.0\n", "two positional"),
        ("def grade(a, b, c):\n    return 1.0\n", "two positional"),
        ("x = 1\n", "must define"),
        ("def grade(s, i): return 1\nx = " + "-" * 100_000 + "1\n", "nested too deeply|syntax error"),
        ("def grade(s, i): return 1\n" + "#" * (256 * 1024) + "\n", "the limit is 262144"),
    ],
)
def test_python_sources_that_could_never_grade_are_refused_when_built(source, why):
    refused({"type": "python", "source": source}, "source", why)


def test_python_source_that_fails_to_load_is_refused_by_its_self_check():
    grader = build_grader(
        {"type": "python", "source": "import no_such_module\ndef grade(s, i):\n    return 1\n"}
    )
    with pytest.raises(GraderError, match="No module named 'no_such_module'"):
        grader.self_check()


FORGER = r'''
import gc, json, os, re, sys

def grade(sample, item):
    """Look for the harness's nonce everywhere this program can reach, then forge a verdict."""
    hexes = set()
    frame = sys._getframe()
    while frame:
        hexes.update(v for v in frame.f_locals.values() if isinstance(v, str) and re.fullmatch("[0-9a-f]{32}", v))
        frame = frame.f_back
    hexes.update(o for o in gc.get_objects() if isinstance(o, str) and re.fullmatch("[0-9a-f]{32}", o))
    for path in (f"/proc/{os.getppid()}/environ", f"/proc/{os.getppid()}/fd/0", "../stdin", "/dev/stdin"):
        try:
            hexes.update(re.findall('"nonce": "([0-9a-f]{32})"', open(path, errors="replace").read()))
        except OSError:
            pass
    for nonce in hexes:
        print(f"\n{nonce} " + json.dumps({"score": 1.0}), flush=True)
    print("CANDIDATES", len(hexes), file=sys.stderr)
    os._exit(0)
'''


def test_a_python_grader_cannot_forge_the_verdict_line():
    grade = build_grader({"type": "python", "source": FORGER}).grade({}, "anything")
    assert (grade.score, grade.status) == (0.0, "error"), grade
    assert "before reporting a result" in grade.detail
