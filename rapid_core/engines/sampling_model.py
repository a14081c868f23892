"""The model the ``hf`` engine samples from: a plain copy of the policy in the compute dtype with
the LoRA deltas merged into the base weights.

Why a copy: with an unmerged adapter every linear layer costs three matmuls, two adds and the
casts autocast inserts around float32 LoRA weights (profiled: 631 matmuls and ~900 copies per
decode step for SmolLM2-135M); merged, it is one bf16 matmul. The copy is rebuilt only when a
trainable tensor changed (their in-place version counters moved), so rounds, evaluation after
training and resumed checkpoints all sample from the current weights. The behaviour log-probs the
engine records are those of this copy, i.e. of the distribution actually sampled; its rounding
difference from the training forward pass is what the importance weights correct at staleness 0.
"""

from __future__ import annotations

import torch

from rapid_core.cpu_attention import plain_implementation
from rapid_core.models import Policy


def _lora_layer_type():
    from peft.tuners.lora import LoraLayer

    return LoraLayer


class SamplingModel:
    """``get()`` returns a causal LM to sample from, up to date with the policy's weights."""

    def __init__(self, policy: Policy):
        self.policy = policy
        # float32 full fine-tuning has nothing to merge or cast: sample from the policy itself.
        self.shared = not policy.lora and policy.dtype == torch.float32
        self.model = None
        self._version: tuple[int, ...] | None = None

    def get(self):
        if self.shared:
            return self.policy.model
        version = tuple(p._version for p in self.policy.trainable_parameters())
        if self.model is None or version != self._version:
            self._refresh()
            self._version = version
        return self.model

    def _base(self):
        m = self.policy.model
        return m.get_base_model() if self.policy.lora else m

    @torch.no_grad()
    def _refresh(self) -> None:
        base = self._base()
        if self.model is None:
            from transformers import AutoModelForCausalLM

            with torch.random.fork_rng(devices=[]):  # its random init must not shift the sampling stream
                self.model = AutoModelForCausalLM.from_config(
                    base.config,
                    dtype=self.policy.dtype,
                    attn_implementation=plain_implementation(base.config),
                )
            self.model.to(self.policy.device).train(False)
            self.model.requires_grad_(False)
        target = dict(self.model.named_parameters())
        for name, p in base.named_parameters():
            if "lora_" in name:
                continue
            target[name.replace(".base_layer.", ".")].copy_(p)
        if self.policy.lora:
            lora_layer = _lora_layer_type()
            for name, module in base.named_modules():
                if not isinstance(module, lora_layer) or module.disable_adapters:
                    continue
                adapters = [a for a in module.active_adapters if a in module.lora_A]
                if not adapters:
                    continue
                w = target[f"{name}.weight"]
                merged = module.base_layer.weight.float()
                for a in adapters:
                    merged = merged + module.get_delta_weight(a).float()
                w.copy_(merged)
