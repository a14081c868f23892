"""``text_similarity``: fuzzy match (rapidfuzz), BLEU (sacrebleu), GLEU and METEOR (nltk), ROUGE
(rouge-score). ``evaluation_metric`` is required, as in OpenAI's API.

METEOR needs WordNet: NLTK's own data when installed, else the WordNet 3.0 database of the Debian
package ``wordnet-base`` (``/usr/share/wordnet``, installed by ``scripts/setup.sh``). Without either
the metric is refused when the grader is built. ``cosine`` needs an embedding model: refused.
"""

from __future__ import annotations

import functools
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rapid_core.errors import GraderError
from rapid_core.graders.base import Grade, Grader, failed_grade, register_grader, threshold
from rapid_core.graders.templates import check_record, render, template_fields, template_spec

ROUGE = [f"rouge_{n}" for n in range(1, 6)] + ["rouge_l"]
METRICS = ["fuzzy_match", "bleu", "gleu", "meteor", *ROUGE, "cosine"]
DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet 3.0's lexicographer files, in number order (lexnames(5WN)); Debian ships no lexnames file.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


def _fuzzy(output: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(output, reference) / 100.0


def _bleu(output: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(output, [reference]).score / 100.0


def _gleu(output: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([reference.split()], output.split()))


@functools.cache
def wordnet():
    """NLTK's WordNet reader: NLTK's data if installed, else Debian's WordNet 3.0 database."""
    import nltk
    from nltk.corpus import WordNetCorpusReader
    from nltk.corpus import wordnet as nltk_wordnet

    try:
        nltk_wordnet.ensure_loaded()
        return nltk_wordnet
    except LookupError:
        pass
    if not (DEBIAN_WORDNET / "data.noun").is_file():
        raise LookupError(
            "WordNet is not installed: install the Debian package wordnet-base, or NLTK's wordnet data"
        )

    if str(DEBIAN_WORDNET) not in nltk.data.path:  # NLTK reads only below its data path
        nltk.data.path.append(str(DEBIAN_WORDNET))

    class DebianWordNet(WordNetCorpusReader):
        def open(self, fileid):
            if fileid == "lexnames":
                return io.StringIO("".join(f"{i:02d}\t{name}\t0\n" for i, name in enumerate(_LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version="wordnet"):  # maps other WordNet versions for multilingual data only
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": not needed here
        warnings.simplefilter("ignore")
        return DebianWordNet(str(DEBIAN_WORDNET), None)


def _meteor(output: str, reference: str) -> float:
    from nltk.translate.meteor_score import single_meteor_score

    return float(single_meteor_score(reference.split(), output.split(), wordnet=wordnet()))


def _rouge(metric: str) -> Callable[[str, str], float]:
    from rouge_score import rouge_scorer

    key = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
    scorer = rouge_scorer.RougeScorer([key], use_stemmer=False)
    return lambda output, reference: scorer.score(reference, output)[key].fmeasure


def scorer_for(metric: str) -> Callable[[str, str], float]:
    """The scoring function, or GraderError when its library or data is missing."""
    if metric == "cosine":
        raise GraderError(
            "text_similarity metric 'cosine' needs an embedding model and is not supported "
            "here; use fuzzy_match, bleu, gleu, meteor or rouge_*",
            "evaluation_metric",
        )
    try:
        if metric == "meteor":
            wordnet()
        table = {"fuzzy_match": _fuzzy, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor}
        score = table[metric] if metric in table else _rouge(metric)
        score("warm up", "warm up")  # imports the library now, so a missing one is refused here
        return score
    except (ImportError, LookupError, OSError) as err:
        raise GraderError(
            f"text_similarity metric {metric!r} is unavailable here: {str(err).strip()[:200]}",
            "evaluation_metric",
        ) from None


@register_grader("text_similarity")
class TextSimilarityGrader(Grader):
    fields = {"input", "reference", "evaluation_metric", "pass_threshold"}

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec)
        self.input = template_spec(spec, "input", "{{sample.output_text}}")
        self.reference = template_spec(spec, "reference")
        self.metric = spec.get("evaluation_metric")
        if self.metric not in METRICS:
            raise GraderError(
                f"grader.evaluation_metric is required, one of {METRICS}"
                + (f", not {self.metric!r}" if "evaluation_metric" in spec else ""),
                "evaluation_metric",
            )
        self.score_fn = scorer_for(self.metric)
        self.pass_threshold = threshold(spec)

    def required_fields(self) -> set[str]:
        return template_fields(self.input) | template_fields(self.reference)

    def self_check(self, item: dict[str, Any] | None = None) -> None:
        if item is not None:
            check_record({"input": self.input, "reference": self.reference}, item)

    def grade(self, item: dict[str, Any], output_text: str) -> Grade:
        start = time.perf_counter()
        try:
            a, b = render(self.input, item, output_text), render(self.reference, item, output_text)
            score = float(self.score_fn(a, b))
        except Exception as err:
            return failed_grade(err, start)
        return Grade(score, self.classify(score), "", time.perf_counter() - start)
