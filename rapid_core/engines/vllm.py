"""The ``vllm`` engine (GPU only, optional): the ``hf`` engine's interface backed by vLLM's offline
``LLM``, serving the policy's LoRA adapter.

Supported vLLM: the range of pyproject's ``vllm`` extra (>= 0.10.2, < 0.34). What the mapping relies
on, checked in vLLM's source of 0.10.2, 0.11, 0.12, 0.20, 0.25, 0.30 and 0.33:

- ``logprobs_mode="processed_logprobs"`` with ``SamplingParams(logprobs=0)`` returns, per generated
  token, a dict holding the sampled token's log-prob after temperature (top-k / top-p are off here),
  i.e. log mu(y_t) at temperature T. The dict may hold other tokens too: we look the sampled id up.
  Before 0.10.2 "processed" meant before temperature, hence the lower bound.
- Greedy (temperature 0) skips temperature, so its log-probs are at temperature 1, as ``Sampling``
  says. vLLM refuses n > 1 when greedy: we ask for one and repeat it (the n would be identical).
- ``token_ids`` keep the EOS token that stopped a sample. vLLM < 0.12 checks max_tokens before EOS
  and reports "length" when the last allowed token is EOS, so the finish reason is read from the ids,
  as in the hf engine: "stop" when the completion ends with an EOS id. "abort" / "error" mean the
  sample did not complete: an error, never a short rollout trained on.
- Texts are decoded by the policy's tokenizer (vLLM's detokenizer is off): the hf engine's call, so
  both engines give the same text for the same ids.
- vLLM caches adapters by ``lora_int_id`` and compares ``LoRARequest`` by name: each new set of
  weights is saved to a new directory and handed over under a new id and name.
- vLLM sleeps (level 1: weights to CPU memory, KV cache dropped) except inside ``generate``, so the
  training steps between generations have the GPU memory.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from rapid_core.config import TrainConfig
from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.errors import ConfigError
from rapid_core.models import Policy, save_adapter

# The max_lora_rank values every supported vLLM accepts (0.12 added 1).
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM reserves adapter slots for that holds a rank-``rank`` adapter."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ConfigError(f"engine vllm serves LoRA ranks up to {LORA_RANKS[-1]}, got {rank}", "lora_r")


@ENGINES.register("vllm")
class VLLMEngine(Engine):
    def __init__(
        self,
        policy: Policy,
        *,
        model_dir: str,
        lora_rank: int,
        seed: int = 0,
        gpu_memory_utilization: float = 0.35,
    ):
        """
        policy: the LoRA policy being trained; its adapter is what vLLM serves, its tokenizer decodes
            the texts and its compute dtype is vLLM's dtype.
        model_dir: a Hugging Face directory of the base model's weights (``models._dense_dir``), which
            vLLM loads into its own copy.
        lora_rank: the adapter's rank (``lora_r``); vLLM reserves slots for the next rank it supports.
        seed: vLLM's sampling seed (the run's ``seed``).
        gpu_memory_utilization: the share of GPU memory vLLM may hold (weights + KV cache) while awake;
            the policy and optimizer state already sit on the same GPU.
        """
        if not policy.lora:
            raise ConfigError("engine vllm needs finetune=lora (adapters are handed to vLLM)", "finetune")
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError(
                "engine vllm needs the vllm extra: pip install 'rapid-rl[vllm]'", "engine"
            ) from None
        self.policy = policy
        eos = policy.model.generation_config.eos_token_id  # the same stop set as the hf engine
        self.eos_ids = {
            i
            for i in [*(eos if isinstance(eos, list) else [eos]), policy.tokenizer.eos_token_id]
            if i is not None
        }
        self.llm = LLM(
            model=model_dir,
            dtype=VLLM_DTYPES[policy.dtype],
            seed=seed,
            enable_lora=True,
            max_lora_rank=vllm_lora_rank(lora_rank),
            max_loras=1,
            logprobs_mode="processed_logprobs",
            enable_sleep_mode=True,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.llm.sleep(level=1)  # asleep until the first generate: model loading, evaluation setup follow
        self._adapters = tempfile.TemporaryDirectory(prefix="rapid-vllm-")
        self._lora = None
        self._lora_version: tuple[int, ...] | None = None
        self._handed_over = 0

    @classmethod
    def from_config(cls, cfg: TrainConfig, policy: Policy) -> VLLMEngine:
        from rapid_core.models import dense_dir, resolve_model

        return cls(policy, model_dir=dense_dir(resolve_model(cfg.model)), lora_rank=cfg.lora_r, seed=cfg.seed)

    def sync_policy(self, round_index: int) -> None:
        # Only writes the adapter; vLLM loads it in the next generate, after waking up.
        self._sync_adapter()

    def _sync_adapter(self) -> None:
        """Hand vLLM the policy's current adapter. A new one (directory, id, name) whenever a trainable
        tensor changed since the last (their in-place version counters moved), so evaluation after the
        last round, or after a resume, also samples from the current weights."""
        from vllm.lora.request import LoRARequest

        version = tuple(p._version for p in self.policy.trainable_parameters())
        if self._lora is not None and version == self._lora_version:
            return
        self._handed_over += 1
        k = self._handed_over
        path = Path(self._adapters.name) / f"adapter-{k:06d}"
        save_adapter(self.policy, path)
        previous = self._lora
        self._lora = LoRARequest(lora_name=f"rapid-{k}", lora_int_id=k, lora_path=str(path))
        self._lora_version = version
        if previous is not None:  # never requested again: vLLM loaded it when it served it
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> Rollouts:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._sync_adapter()
        k = 1 if sampling.greedy else n
        params = SamplingParams(
            n=k,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0,
            top_k=0,
            max_tokens=sampling.max_new_tokens,
            logprobs=0,
            detokenize=False,
        )
        self.llm.wake_up()
        try:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts],
                params,
                use_tqdm=False,
                lora_request=self._lora,
            )
        finally:
            self.llm.sleep(level=1)  # the training step that follows gets the GPU memory
        rows, comps, logps, finish = [], [], [], []
        for prompt, out in zip(prompts, outputs, strict=True):
            if list(out.prompt_token_ids) != prompt or len(out.outputs) != k:
                raise RuntimeError("vLLM returned outputs out of the prompts' order or count")
            for c in out.outputs:
                ids, lps, reason = self._sample(c)
                for _ in range(n // k):
                    rows.append(prompt)
                    comps.append(list(ids))
                    logps.append(list(lps))
                    finish.append(reason)
        texts = self.policy.tokenizer.batch_decode(comps, skip_special_tokens=True)
        return Rollouts(rows, comps, logps, texts, finish)

    def _sample(self, c) -> tuple[list[int], list[float], str]:
        """(token ids, log-probs of the sampled tokens, "stop" | "length") of one ``CompletionOutput``."""
        if c.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM did not complete a sample: finish_reason {c.finish_reason!r}")
        ids = list(c.token_ids)
        lps = [lp[t].logprob for t, lp in zip(ids, c.logprobs, strict=True)]
        ends_with_eos = bool(ids) and ids[-1] in self.eos_ids
        if c.finish_reason == "stop" and not ends_with_eos:
            raise RuntimeError(
                f"vLLM stopped a sample on token {ids[-1:]}, not one of the EOS ids {self.eos_ids}"
            )
        return ids, lps, "stop" if ends_with_eos else "length"
