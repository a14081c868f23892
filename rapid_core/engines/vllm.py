"""The ``vllm`` engine (GPU only, optional): the same interface as ``hf``, backed by vLLM's offline
``LLM`` with LoRA. Each round the trainer's current adapter is saved and handed over as a new
``LoRARequest`` (a fresh id per round, so vLLM never serves a cached older adapter).

Written against vLLM's documented API; vLLM cannot be installed on the CPU development machines,
so this module is imported only when ``engine: vllm`` is chosen.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rapid_core.config import TrainConfig
from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.errors import ConfigError
from rapid_core.models import Policy, save_adapter


@ENGINES.register("vllm")
class VLLMEngine(Engine):
    def __init__(self, policy: Policy, model_dir: str, lora_rank: int, gpu_memory_utilization: float = 0.35,
                 **_: object):
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError("engine vllm needs the vllm extra: pip install 'rapid-rl[vllm]'", "engine") from None
        self.policy = policy
        # processed_logprobs: log-probs after temperature, i.e. of the distribution actually sampled.
        self.llm = LLM(
            model=model_dir, enable_lora=True, max_lora_rank=lora_rank, max_loras=1,
            gpu_memory_utilization=gpu_memory_utilization, logprobs_mode="processed_logprobs",
            enable_sleep_mode=True, dtype="bfloat16",
        )
        self._adapters = Path(tempfile.mkdtemp(prefix="rapid-vllm-"))
        self._lora = None

    @classmethod
    def from_config(cls, cfg: TrainConfig, policy: Policy) -> VLLMEngine:
        from rapid_core.models import dense_dir, resolve_model

        return cls(policy, model_dir=dense_dir(resolve_model(cfg.model)), lora_rank=cfg.lora_r)

    def sync_policy(self, round_index: int) -> None:
        from vllm.lora.request import LoRARequest

        path = self._adapters / f"round-{round_index}"
        save_adapter(self.policy, path)
        self._lora = LoRARequest(f"round-{round_index}", round_index + 1, str(path))

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> Rollouts:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=n, temperature=0.0 if sampling.greedy else sampling.temperature, top_p=1.0, top_k=-1,
            max_tokens=sampling.max_new_tokens, logprobs=0,
        )
        self.llm.wake_up()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, lora_request=self._lora,
            use_tqdm=False,
        )
        # Free the KV cache for the training step that follows (GPU memory is shared).
        self.llm.sleep(level=1)
        rows, comps, logps, texts, finish = [], [], [], [], []
        for prompt, out in zip(prompts, outputs, strict=True):
            for c in out.outputs:
                rows.append(prompt)
                comps.append(list(c.token_ids))
                logps.append([lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs, strict=True)])
                texts.append(c.text)
                finish.append("stop" if c.finish_reason == "stop" else "length")
        return Rollouts(rows, comps, logps, texts, finish)
