"""Tasks: the generated arithmetic task and the dataset loaders on the real files."""

import pytest

from rapid_core.config import RunPaths, make_config
from rapid_core.errors import ConfigError, DatasetError
from rapid_core.graders import build_grader
from rapid_core.tasks import load_task, read_jsonl
from tests.conftest import DATASETS


def load(**values):
    """A task from config values, with no paths (the shared dataset copies)."""
    return load_task(make_config(**values), RunPaths())


def problems(records):
    return {r["messages"][-1]["content"] for r in records}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_arithmetic_train_and_held_out_never_overlap(seed):
    task = load(seed=seed)
    assert task.eval and task.train
    assert not problems(task.train) & problems(task.eval)
    big = load(seed=seed, task_options={"max_value": None, "digits": 3, "operators": "+-*"})
    assert len(big.train) == 5000 and not problems(big.train) & problems(big.eval)


def test_arithmetic_is_seeded_and_answers_are_right():
    a, b = load(seed=3), load(seed=3)
    assert a.train == b.train and a.eval == b.eval
    grader = build_grader(a.grader)
    for rec in a.train[:50]:
        x, op, y = rec["messages"][-1]["content"].split(".")[0].split()[1:4]
        assert int(rec["answer"]) == eval(f"{x}{op}{y}")  # noqa: S307  (our own generated digits)
        assert grader.grade(rec, f"The answer is {rec['answer']}").score == 1.0


def test_arithmetic_rejects_bad_options():
    with pytest.raises(ConfigError, match="operators"):
        load(task_options={"operators": "/"})
    with pytest.raises(ConfigError, match="unknown arithmetic option"):
        load(task_options={"base": 2})
    with pytest.raises(ConfigError, match="must contain") as err:
        load(task_options={"prompt": "What is {a} {op} 3?"})
    assert err.value.field == "task_options.prompt"
    with pytest.raises(ConfigError, match="may only use"):
        load(task_options={"prompt": "{a} {op} {b} = {answer}"})


def test_arithmetic_prompt_option_words_every_problem():
    wording = "Calculate {a} {op} {b}. Explain each step, then give the final number."
    task, plain = load(seed=2, task_options={"prompt": wording}), load(seed=2)
    assert [r["answer"] for r in task.train] == [r["answer"] for r in plain.train]
    first = plain.train[0]["messages"][-1]["content"].split(".")[0]  # "Calculate a op b"
    assert (
        task.train[0]["messages"][-1]["content"] == first + ". Explain each step, then give the final number."
    )


def test_gsm8k_task_reads_the_real_files():
    task = load_task(make_config(task="gsm8k"), RunPaths(data_path=str(DATASETS / "gsm8k" / "train.jsonl")))
    assert len(task.train) == 7473 and len(task.eval) == 1319
    rec = task.eval[0]
    assert rec["answer"] == "18" and rec["messages"][-1]["role"] == "user"
    assert build_grader(task.grader).grade(rec, "so she makes #### 18").score == 1.0


def test_single_split_dataset_holds_out_a_tenth_and_the_system_prompt_can_be_replaced():
    task = load(task="math500", system_prompt="Be brief.")
    assert len(task.train) + len(task.eval) == 500 and len(task.eval) == 50
    assert not problems(task.train) & problems(task.eval)
    rec = task.train[0]
    assert rec["messages"][0] == {"role": "system", "content": "Be brief."}
    assert build_grader(task.grader).grade(rec, f"\\boxed{{{rec['answer']}}}").score == 1.0


def test_mbpp_task_uses_the_standard_splits_and_the_code_tests_grader():
    task = load(task="mbpp")
    assert len(task.train) == 374 and len(task.eval) == 500  # task_id 601-974 and 11-510
    assert task.grader["type"] == "code_tests"
    with pytest.raises(ConfigError, match="unknown task 'nope'; known: .*mbpp"):
        load(task="nope")


def test_jsonl_task_needs_a_records_file():
    with pytest.raises(ConfigError, match="needs data_path") as err:
        load(task="jsonl", grader={"type": "exact", "reference": "{{item.answer}}"})
    assert err.value.field == "data_path"


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n{not json}\n')
    with pytest.raises(DatasetError, match="line 2"):
        read_jsonl(path)
