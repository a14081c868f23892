"""``text_similarity``: fuzzy match (rapidfuzz), BLEU (sacrebleu), GLEU (nltk), ROUGE (rouge-score).

``meteor`` needs NLTK's WordNet data, which cannot be downloaded offline: refused unless it is
installed. ``cosine`` needs an embedding model: refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.graders.string_check import template_spec
from rapid_core.graders.templates import render, template_fields

ROUGE = [f"rouge_{n}" for n in range(1, 6)] + ["rouge_l"]
METRICS = ["fuzzy_match", "bleu", "gleu", "meteor", *ROUGE, "cosine"]


def _fuzzy(output: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(output, reference) / 100.0


def _bleu(output: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(output, [reference]).score / 100.0


def _gleu(output: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([reference.split()], output.split()))


def _meteor(output: str, reference: str) -> float:
    from nltk.translate.meteor_score import single_meteor_score

    return float(single_meteor_score(reference.split(), output.split()))


def _rouge(metric: str) -> Callable[[str, str], float]:
    from rouge_score import rouge_scorer

    key = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
    scorer = rouge_scorer.RougeScorer([key], use_stemmer=False)
    return lambda output, reference: scorer.score(reference, output)[key].fmeasure


def scorer_for(metric: str) -> Callable[[str, str], float]:
    """The scoring function, or GraderError when its library or data is missing."""
    if metric == "cosine":
        raise GraderError("text_similarity metric 'cosine' needs an embedding model and is not supported")
    try:
        if metric == "fuzzy_match":
            import rapidfuzz  # noqa: F401
        elif metric == "bleu":
            import sacrebleu  # noqa: F401
        elif metric in ("gleu", "meteor"):
            import nltk  # noqa: F401
        if metric == "meteor":
            from nltk.corpus import wordnet

            wordnet.ensure_loaded()
    except (ImportError, LookupError) as err:
        raise GraderError(
            f"text_similarity metric {metric!r} is unavailable here: {str(err).strip()[:200]}"
        ) from None
    table = {"fuzzy_match": _fuzzy, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor}
    return table[metric] if metric in table else _rouge(metric)


@register_grader("text_similarity")
class TextSimilarityGrader(Grader):
    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        unknown = set(spec) - {"type", "name", "input", "reference", "evaluation_metric", "pass_threshold"}
        if unknown:
            raise GraderError(f"unknown field(s) for text_similarity grader: {', '.join(sorted(unknown))}")
        self.input = template_spec(spec, "input", "{{sample.output_text}}")
        self.reference = template_spec(spec, "reference")
        self.metric = spec.get("evaluation_metric", "fuzzy_match")
        if self.metric not in METRICS:
            raise GraderError(f"grader.evaluation_metric must be one of {METRICS}, not {self.metric!r}")
        self.score_fn = scorer_for(self.metric)
        threshold = spec.get("pass_threshold", 1.0)
        if not isinstance(threshold, int | float):
            raise GraderError("grader.pass_threshold must be a number")
        self.pass_threshold = float(threshold)

    def required_fields(self) -> set[str]:
        return template_fields(self.input) | template_fields(self.reference)

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        start = time.perf_counter()
        try:
            a, b = render(self.input, item, output_text), render(self.reference, item, output_text)
            score = float(self.score_fn(a, b))
        except Exception as err:
            return Grade(0.0, "error", f"{type(err).__name__}: {err}", time.perf_counter() - start)
        return Grade(score, self.classify(score), "", time.perf_counter() - start)
