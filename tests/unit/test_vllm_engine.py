"""The vllm engine's side of the mapping, run against a stand-in ``vllm`` package.

vLLM cannot be installed on the CPU machines that run these tests (nor on the GPU machine the team is
lent), so this is the one place a stand-in is right. The ``standin_vllm`` fixture puts modules
``vllm``, ``vllm.lora.request`` and ``vllm.inputs`` into ``sys.modules`` whose classes carry the real
ones' names, fields and argument checks (read from vLLM 0.10.2 - 0.33), record every call, and
answer in vLLM's shapes: ``RequestOutput`` per prompt in prompt order, ``n`` ``CompletionOutput``s
each, token ids that keep the EOS token that stopped a sample, one ``{token id: Logprob}`` dict per
token that may hold more than the sampled token, and the finish-reason quirk of vLLM < 0.12 (EOS as
the last allowed token reported as "length"). What the tests pin is OUR side: ids, texts, behaviour
log-probs, finish reasons, rows in prompt-major order, the SamplingParams and LLM options we pass,
a fresh adapter (directory, id, name) whenever the weights changed, and the sleep / wake order.
bench/vllm_check.py runs the real vLLM where it imports.
"""

from __future__ import annotations

import json
import random
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import pytest
import torch

from rapid_core.config import RunPaths, make_config
from rapid_core.engines import Sampling, make_engine
from rapid_core.errors import ConfigError
from rapid_core.evaluation import evaluate
from rapid_core.graders import build_grader
from rapid_core.models import TINY_ALIAS, ensure_tiny_model, load_policy, prompt_token_ids
from rapid_core.tasks import load_task
from rapid_core.trainer import train

# --- the stand-in ---------------------------------------------------------------------------------


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class SamplingParams:
    """The fields the engine sets, with vLLM's defaults and checks."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    detokenize: bool = True

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.logprobs is not None and self.logprobs < -1:
            raise ValueError(f"logprobs must be non-negative or -1, got {self.logprobs}.")
        if self.temperature < 1e-5 and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]


@dataclass(eq=False)
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""

    def __post_init__(self):
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"

    def __eq__(self, other):  # vLLM compares adapters by name
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self):
        return hash(self.lora_name)


ENGINE_ARGS = {
    "dtype",
    "seed",
    "enable_lora",
    "max_lora_rank",
    "max_loras",
    "logprobs_mode",
    "enable_sleep_mode",
    "gpu_memory_utilization",
    "max_model_len",
    "enforce_eager",
}
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.10.2 - 0.11; 0.12 adds 1
LOGPROBS_MODES = ("raw_logits", "raw_logprobs", "processed_logits", "processed_logprobs")


@dataclass
class Call:
    name: str
    args: dict = field(default_factory=dict)


class LLM:
    instances: list[LLM] = []

    def __init__(self, model: str, **kwargs):
        if unknown := set(kwargs) - ENGINE_ARGS:
            raise TypeError(f"unexpected engine arguments {unknown}")
        if kwargs.get("max_lora_rank", 16) not in LORA_RANKS:
            raise ValueError(f"max_lora_rank ({kwargs['max_lora_rank']}) must be one of {LORA_RANKS}.")
        if kwargs.get("logprobs_mode", "raw_logprobs") not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode {kwargs['logprobs_mode']!r}")
        self.model = model
        self.eos = json.loads((Path(model) / "config.json").read_text())["eos_token_id"]
        self.calls: list[Call] = [Call("init", dict(kwargs, model=model))]
        self.asleep = False
        self.finish_override: str | None = None  # make every sample of the next call end this way
        self.rng = random.Random(kwargs.get("seed", 0))
        LLM.instances.append(self)

    def sleep(self, level: int = 1):
        self.calls.append(Call("sleep", {"level": level}))
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None):
        self.calls.append(Call("wake_up", {"tags": tags}))
        self.asleep = False

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None):
        assert not self.asleep, "generate on a sleeping engine: its weights and KV cache are not on the GPU"
        params = sampling_params
        adapter = None
        if lora_request is not None:  # vLLM reads the adapter from its directory when it first serves it
            from peft import PeftConfig
            from safetensors.torch import load_file

            path = Path(lora_request.lora_path)
            adapter = {
                "config": PeftConfig.from_pretrained(path),
                "weights": load_file(path / "adapter_model.safetensors"),
            }
        outputs = [
            RequestOutput(
                str(i),
                None,
                list(p["prompt_token_ids"]),
                None,
                [self._sample(p["prompt_token_ids"], j, params) for j in range(params.n)],
            )
            for i, p in enumerate(prompts)
        ]
        self.calls.append(
            Call(
                "generate",
                {
                    "params": params,
                    "lora": lora_request,
                    "adapter": adapter,
                    "outputs": outputs,
                    "use_tqdm": use_tqdm,
                },
            )
        )
        self.finish_override = None
        return outputs

    def _sample(self, prompt: list[int], j: int, params: SamplingParams) -> CompletionOutput:
        """Sample j: (j % 3 == 0) EOS after 1-2 tokens; (1) runs to max_tokens; (2) EOS as the last
        allowed token, reported "length" as vLLM < 0.12 does. Greedy: the first shape, from the prompt."""
        m = params.max_tokens
        rng = random.Random(sum(prompt)) if params.temperature < 1e-5 else self.rng
        body = 1 + len(prompt) % 2 if j % 3 == 0 else m if j % 3 == 1 else m - 1
        ids = [rng.randrange(3, 5000) for _ in range(min(body, m))]
        if len(ids) < m:
            ids.append(self.eos)
        logprobs = []
        for t, tok in enumerate(ids):
            own = Logprob(-rng.uniform(0.05, 4.0), rank=2 if t % 2 == 0 else 1)
            # logprobs=0 still returns the sampled token; a more likely rival may come with it, first.
            logprobs.append({tok + 1: Logprob(-0.01, rank=1), tok: own} if t % 2 == 0 else {tok: own})
        finish = "stop" if ids[-1] == self.eos and j % 3 == 0 else "length"
        text = "" if not params.detokenize else "<detokenized>"
        return CompletionOutput(j, text, ids, None, logprobs, self.finish_override or finish)


@pytest.fixture
def standin_vllm(monkeypatch):
    root, lora, request, inputs = (
        types.ModuleType(n) for n in ("vllm", "vllm.lora", "vllm.lora.request", "vllm.inputs")
    )
    root.LLM, root.SamplingParams, root.TokensPrompt = LLM, SamplingParams, TokensPrompt
    root.lora, lora.request, root.inputs = lora, request, inputs
    request.LoRARequest = LoRARequest
    inputs.TokensPrompt = TokensPrompt
    for mod in (root, lora, request, inputs):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    LLM.instances.clear()
    return root


# --- the tests ------------------------------------------------------------------------------------


def vllm_engine(tiny_model: str, **options):
    cfg = make_config(model=tiny_model, dtype="fp32", engine="vllm", seed=7, **options)
    policy = load_policy(cfg)
    return policy, make_engine(cfg, policy)  # the trainer's path (Engine.from_config)


def ask(policy, *texts: str) -> list[list[int]]:
    return [prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in texts]


def test_llm_is_built_for_lora_processed_logprobs_and_sleep_mode(standin_vllm, tiny_model):
    policy, engine = vllm_engine(tiny_model, lora_r=4)
    init = engine.llm.calls[0]
    assert init.name == "init" and init.args == {
        "model": ensure_tiny_model(),
        "dtype": "float32",
        "seed": 7,
        "enable_lora": True,
        "max_lora_rank": 8,  # rank 4 rounded up to the smallest rank vLLM reserves slots for
        "max_loras": 1,
        "logprobs_mode": "processed_logprobs",
        "enable_sleep_mode": True,
        "gpu_memory_utilization": 0.35,
    }
    assert [c.name for c in engine.llm.calls] == ["init", "sleep"]  # asleep until the first generate


def test_rows_ids_logprobs_texts_and_finish_reasons_map_vllm_outputs(standin_vllm, tiny_model):
    policy, engine = vllm_engine(tiny_model)
    prompts = ask(policy, "Hi", "What is 2+2?")
    out = engine.generate(prompts, 3, Sampling(temperature=0.7, max_new_tokens=5))
    call = engine.llm.calls[-2]
    assert call.name == "generate"
    p = call.args["params"]
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens, p.logprobs, p.detokenize, p.min_p) == (
        3,
        0.7,
        1.0,
        0,
        5,
        0,
        False,
        0.0,
    )
    assert call.args["use_tqdm"] is False
    vouts = call.args["outputs"]
    assert len(out) == 6
    eos = policy.tokenizer.eos_token_id
    for i, prompt in enumerate(prompts):
        for j in range(3):
            row, c = i * 3 + j, vouts[i].outputs[j]
            assert out.prompt_ids[row] == prompt
            assert out.completion_ids[row] == c.token_ids
            assert out.behaviour_logps[row] == [
                d[t].logprob for t, d in zip(c.token_ids, c.logprobs, strict=True)
            ]
            assert all(lp != -0.01 for lp in out.behaviour_logps[row])  # never the rival's log-prob
            assert out.texts[row] == policy.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    # Sample 0 stops on EOS, 1 runs out of tokens, 2 ends with EOS on its last allowed token (vLLM < 0.12
    # says "length"): the contract's "stop" means the completion ends with EOS.
    for i in range(2):
        stop, length, eos_last = out.completion_ids[i * 3 : i * 3 + 3]
        assert stop[-1] == eos and len(stop) < 5 and out.finish_reasons[i * 3] == "stop"
        assert eos not in length and len(length) == 5 and out.finish_reasons[i * 3 + 1] == "length"
        assert eos_last[-1] == eos and len(eos_last) == 5 and out.finish_reasons[i * 3 + 2] == "stop"
        assert vouts[i].outputs[2].finish_reason == "length"


def test_greedy_asks_for_temperature_0_and_one_sample_and_repeats_it(standin_vllm, tiny_model):
    policy, engine = vllm_engine(tiny_model)
    prompts = ask(policy, "a", "bb")
    out = engine.generate(prompts, 2, Sampling(temperature=0.7, max_new_tokens=6, greedy=True))
    p = engine.llm.calls[-2].args["params"]
    assert (p.n, p.temperature, p.logprobs) == (1, 0.0, 0)  # vLLM refuses n > 1 when greedy
    assert out.prompt_ids == [prompts[0], prompts[0], prompts[1], prompts[1]]
    assert out.completion_ids[0] == out.completion_ids[1] and out.completion_ids[2] == out.completion_ids[3]
    assert out.completion_ids[0] is not out.completion_ids[1]
    assert set(out.finish_reasons) == {"stop"}


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_a_sample_vllm_did_not_complete_is_an_error_not_a_short_rollout(standin_vllm, tiny_model, reason):
    policy, engine = vllm_engine(tiny_model)
    engine.llm.finish_override = reason
    with pytest.raises(RuntimeError, match=reason):
        engine.generate(ask(policy, "Hi"), 2, Sampling(max_new_tokens=4))
    assert engine.llm.calls[-1].name == "sleep"  # the GPU memory is still handed back


def test_each_weight_change_gets_a_new_adapter_and_vllm_sleeps_outside_generate(standin_vllm, tiny_model):
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    policy, engine = vllm_engine(tiny_model)
    task_cfg = make_config(model=tiny_model, eval_problems=2)
    records = load_task(task_cfg, RunPaths()).eval[:2]
    grader = build_grader({"type": "numeric", "reference": "{{item.answer}}"})
    prompts = [prompt_token_ids(policy.tokenizer, r["messages"]) for r in records]
    lora_b = next(p for n, p in policy.model.named_parameters() if "lora_B" in n)

    def optimizer_step():  # in place, as AdamW updates the weights
        with torch.no_grad():
            lora_b.add_(0.01)

    def adapter_now() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in get_peft_model_state_dict(policy.model).items()}

    expected = []  # the policy's adapter at each generate
    engine.sync_policy(0)
    assert [c.name for c in engine.llm.calls] == ["init", "sleep"]  # writes the adapter only
    expected.append(adapter_now())
    engine.generate(prompts, 2, Sampling(max_new_tokens=4))  # round 0
    optimizer_step()
    expected += [adapter_now()] * 2
    evaluate(engine, policy.tokenizer, grader, records, k=2, temperature=1.0, max_new_tokens=4)
    optimizer_step()
    engine.sync_policy(1)
    expected.append(adapter_now())
    engine.generate(prompts, 2, Sampling(max_new_tokens=4))  # round 1

    names = [c.name for c in engine.llm.calls]
    assert names == ["init", "sleep"] + ["wake_up", "generate", "sleep"] * 4
    gens = [c.args for c in engine.llm.calls if c.name == "generate"]
    assert [g["params"].temperature for g in gens] == [
        1.0,
        0.0,
        1.0,
        1.0,
    ]  # round, eval greedy + sampled, round
    ids = [g["lora"].lora_int_id for g in gens]
    assert ids == [1, 2, 2, 3]  # new weights -> new id; evaluation's two calls share one
    assert len({g["lora"].lora_name for g in gens}) == 3 and len({g["lora"].lora_path for g in gens}) == 3
    for g, want in zip(gens, expected, strict=True):
        assert g["adapter"]["config"].r == policy.model.peft_config["default"].r
        assert set(g["adapter"]["weights"]) == set(want)
        assert all(torch.equal(g["adapter"]["weights"][k], want[k]) for k in want)
    assert not Path(gens[0]["lora"].lora_path).exists()  # replaced adapters are removed
    # The adapter vLLM serves now is a PEFT adapter of the base model.
    base = AutoModelForCausalLM.from_pretrained(ensure_tiny_model(), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, gens[-1]["lora"].lora_path)
    got = get_peft_model_state_dict(loaded)
    assert all(torch.equal(got[k], expected[-1][k]) for k in expected[-1])


def test_trainer_runs_rounds_through_vllm_and_evaluates_the_final_weights(standin_vllm, tmp_path, tiny_model):
    from safetensors.torch import load_file

    cfg = make_config(
        model=tiny_model,
        engine="vllm",
        dtype="fp32",
        batch_ratio_control="fixed",
        rounds=2,
        prompts_per_round=2,
        group_size=2,
        mini_batch_size=2,
        max_new_tokens=4,
        eval_problems=2,
        eval_k=2,
        learning_rate=1e-2,
        seed=3,
        grader={
            "type": "text_similarity",
            "evaluation_metric": "fuzzy_match",
            "input": "{{sample.output_text}}",
            "reference": "the answer is {{item.answer}}",
        },
    )
    summary = train(cfg, RunPaths(output_dir=tmp_path))
    assert summary["rounds"] == 2 and summary["steps"] == 4
    (llm,) = LLM.instances
    assert llm.calls[0].args["seed"] == 3 and llm.calls[0].args["max_lora_rank"] == 16
    assert [c.name for c in llm.calls] == ["init", "sleep"] + ["wake_up", "generate", "sleep"] * 6
    gens = [c.args for c in llm.calls if c.name == "generate"]
    # eval before (greedy, sampled), round 0, round 1, eval after (greedy, sampled)
    assert [(g["params"].n, g["params"].temperature) for g in gens] == [
        (1, 0.0),
        (2, 1.0),
        (2, 1.0),
        (2, 1.0),
        (1, 0.0),
        (2, 1.0),
    ]
    assert [g["lora"].lora_int_id for g in gens] == [1, 1, 1, 2, 3, 3]
    # The evaluation after training served the final weights, not the adapter of the last round's start.
    final = load_file(Path(summary["adapter_dir"]) / "adapter_model.safetensors")
    served = gens[-1]["adapter"]["weights"]
    assert all(torch.equal(served[k], final[k]) for k in final)
    assert not all(torch.equal(gens[3]["adapter"]["weights"][k], final[k]) for k in final)


def test_vllm_engine_refuses_a_lora_rank_it_cannot_serve():
    with pytest.raises(ConfigError, match="512"):
        make_config(model=TINY_ALIAS, engine="vllm", lora_r=1024)


def test_vllm_engine_without_vllm_installed_says_which_extra_to_install(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    cfg = make_config(model=tiny_model, dtype="fp32", engine="vllm")
    policy = load_policy(cfg)
    with pytest.raises(ConfigError, match=r"rapid-rl\[vllm\]"):
        make_engine(cfg, policy)
