"""The generation-engine interface: prompts x n samples -> completion ids, texts and the behaviour
log-probs of the sampled tokens, taken from the sampling pass itself (RAPID.md, step 2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rapid_core.registry import Registry

if TYPE_CHECKING:
    from rapid_core.config import TrainConfig
    from rapid_core.models import Policy


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    max_new_tokens: int = 64
    greedy: bool = False  # argmax decoding (evaluation); log-probs are then at temperature 1


@dataclass
class Rollouts:
    """One entry per sample, samples of the same prompt adjacent (prompt i -> rows i*n .. i*n+n-1)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # ends with EOS when finish_reason == "stop"
    behaviour_logps: list[list[float]]  # log mu(y_t | x, y_<t) at the sampling temperature
    texts: list[str]
    finish_reasons: list[str]  # "stop" or "length"
    # How the engine spent the call, for the round metrics: prefill_s, decode_s, decode_steps,
    # decode_ms_per_step, gen_peak_mem_gb (CUDA), the decode loop used.
    stats: dict[str, float | str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def generated_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)


class Engine(ABC):
    @classmethod
    @abstractmethod
    def from_config(cls, cfg: TrainConfig, policy: Policy) -> Engine:
        """Build the engine for a run: each engine reads the config options it needs. The trainer
        and ``rapid eval`` both build engines this way (through ``make_engine``)."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> Rollouts:
        """Sample ``n`` completions for each tokenized prompt."""

    def sync_policy(self, round_index: int) -> None:
        """Called at the start of each round (mu := pi_theta): engines holding their own copy of the
        weights refresh it here. The in-process hf engine shares the policy and needs nothing."""
        return None


ENGINES: Registry[type[Engine]] = Registry("engine")
