"""The ``hf`` engine: a batched KV-cache decode loop over a transformers model.

A hand-written loop rather than ``generate()``: it returns the sampled tokens' log-probs at the
sampling temperature from the same forward pass (no second pass, no stored vocabulary-sized logits),
and it samples exactly softmax(logits / T) (top_p = 1, top_k = 0), so mu is what was sampled.
What makes it fast (docs/perf-notes.md): it samples from a merged copy of the policy in the compute
dtype (``SamplingModel``) and runs the prompt forward pass once per distinct prompt (and the tokens
all of them start with once per micro-batch), copying its KV cache to the prompt's G rows. Two decode
loops continue from that prompt pass:

- ``dynamic``: transformers' own layers on a growing cache, finished rows dropped from the batch
  (any architecture);
- ``static`` / ``compiled`` / ``cuda_graph`` (static_decode.py): preallocated KV buffers; the step
  run eagerly (the CPU default: no per-step cache concatenation or mask building), through
  ``torch.compile``, or captured as a CUDA graph (the GPU default: a small model's step there is
  launch overhead, not FLOPs).

Both read one uniform per row and step from a stream drawn before decoding, so the same seed gives
the same samples whichever loop runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import DynamicCache

from rapid_core.config import TrainConfig
from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.engines.sampling_model import SamplingModel
from rapid_core.engines.static_decode import (
    StaticDecoder,
    next_tokens,
    sample_categorical,
    unsupported_reason,
)
from rapid_core.errors import ConfigError
from rapid_core.kvcache import cache_kwarg, distinct_prompts, run_prompts
from rapid_core.models import Policy

log = logging.getLogger("rapid.engine")
DecodeMode = Literal["auto", "dynamic", "static", "compiled", "cuda_graph"]
__all__ = ["HFEngine", "sample_categorical"]


@dataclass
class Prefill:
    """The prompt pass of one micro-batch: a KV cache over its distinct prompts, and per row which
    prompt it continues, its attention mask (left padding) and its next position."""

    cache: DynamicCache
    copy_of: torch.Tensor  # [rows] index of each row's prompt among the distinct ones
    attention: torch.Tensor  # [rows, width]
    next_pos: torch.Tensor  # [rows, 1]

    def layer_kv(self):
        return [(layer.keys, layer.values) for layer in self.cache.layers]


def next_token_logits(decoder, lm_head, cache: DynamicCache, **inputs) -> torch.Tensor:
    # Output layer on the last position only, as a 2-D matmul (a 3-D slice here makes torch
    # expand the tied weight per row: a 1.8 G-element copy for SmolLM2 at batch 64).
    hidden = decoder(**inputs, **{cache_kwarg(decoder): cache}, use_cache=True).last_hidden_state
    return lm_head(hidden[:, -1, :].contiguous()).float()


def prefill(model, prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, Prefill]:
    """Run each distinct prompt once; return the rows' first-token logits [rows, V] and the Prefill."""
    uniq, copy_of = distinct_prompts(prompts, model.device)
    run = run_prompts(model.model, uniq, pad_id, model.device)
    logits = model.lm_head(run.last).float()
    return logits[copy_of], Prefill(
        run.cache, copy_of, run.attention[copy_of], run.positions[copy_of, -1:] + 1
    )


def resolve_decode(mode: DecodeMode, model) -> str:
    """The decode loop ``mode`` asks for on this model and device. auto: where the architecture
    allows it, cuda_graph on CUDA and static on a CPU (85 ms a decode step at batch 64 against the
    dynamic loop's 104 on a Zen 5 CPU, docs/perf-notes.md §18; compiled is no faster there and
    compiles each bucket first); dynamic otherwise."""
    why = unsupported_reason(model)
    if mode == "auto":
        if why is not None:
            return "dynamic"
        return "cuda_graph" if model.device.type == "cuda" else "static"
    if mode != "dynamic" and why is not None:
        raise ConfigError(f"decode {mode!r} is not available for this model: {why}", "decode")
    if mode == "cuda_graph" and model.device.type != "cuda":
        raise ConfigError("decode 'cuda_graph' needs a CUDA device", "decode")
    return mode


@ENGINES.register("hf")
class HFEngine(Engine):
    # Drop finished rows once this share of the live batch has finished (each drop copies the cache).
    DROP_SHARE = 0.125

    def __init__(self, policy: Policy, micro_batch: int = 64, decode: DecodeMode = "auto", **_: object):
        self.policy = policy
        self.micro_batch = micro_batch
        self.decode_option = decode
        self.sampler = SamplingModel(policy)
        self._static: StaticDecoder | None = None
        self.fallback: str | None = None  # why auto gave up the static loop, if it did
        tok = policy.tokenizer
        eos = policy.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        self.eos_ids = torch.tensor(sorted(i for i in eos_ids if i is not None), device=policy.device)
        self.pad_id = tok.pad_token_id

    @classmethod
    def from_config(cls, cfg: TrainConfig, policy: Policy) -> HFEngine:
        return cls(policy, micro_batch=cfg.gen_micro_batch, decode=cfg.decode)

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> Rollouts:
        rows = [p for p in prompts for _ in range(n)]
        # Longest prompts first so each micro-batch holds similar lengths (less left padding); the
        # sort is stable, so the n copies of a prompt stay together and share one prompt pass.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        completions: list[list[int]] = [[] for _ in rows]
        logps: list[list[float]] = [[] for _ in rows]
        model = self.sampler.get()
        mode = "dynamic" if self.fallback else resolve_decode(self.decode_option, model)
        cuda = model.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(model.device)
        clock = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0}
        for start in range(0, len(order), self.micro_batch):
            idx = order[start : start + self.micro_batch]
            toks, lps = self._decode(model, mode, [rows[i] for i in idx], sampling, clock)
            for j, i in enumerate(idx):
                completions[i], logps[i] = toks[j], lps[j]
        eos = set(self.eos_ids.tolist())
        finish = ["stop" if c and c[-1] in eos else "length" for c in completions]
        texts = self.policy.tokenizer.batch_decode(completions, skip_special_tokens=True)
        stats = {**clock, "decode_ms_per_step": 1e3 * clock["decode_s"] / max(clock["decode_steps"], 1)}
        if cuda:
            stats["gen_peak_mem_gb"] = torch.cuda.max_memory_allocated(model.device) / 2**30
        stats["decode"] = "dynamic" if self.fallback else mode
        if self.fallback:
            stats["decode_fallback"] = self.fallback
        return Rollouts(rows, completions, logps, texts, finish, stats=stats)

    @torch.inference_mode()
    def _decode(
        self, model, mode: str, prompts: list[list[int]], sampling: Sampling, clock: dict
    ) -> tuple[list[list[int]], list[list[float]]]:
        device, steps = self.policy.device, sampling.max_new_tokens
        # One uniform per row and step, drawn before decoding: both loops read the same stream.
        uniforms = (
            None if sampling.greedy else torch.rand((steps, len(prompts)), dtype=torch.float64, device=device)
        )
        t0 = _now(device)
        logits, pre = prefill(model, prompts, self.pad_id)
        t1 = _now(device)
        if mode == "dynamic":
            out_tok, out_lp, ran = self._dynamic_loop(model, logits, pre, sampling, uniforms)
        else:
            try:
                if self._static is None or self._static.model is not model:
                    self._static = StaticDecoder(
                        model,
                        self.eos_ids,
                        self.pad_id,
                        graphs=mode == "cuda_graph",
                        compiled=mode == "compiled",
                    )
                out_tok, out_lp, ran = self._static.decode(logits, pre, sampling, uniforms)
            except RuntimeError as err:
                if self.decode_option != "auto":
                    raise
                # auto never fails a job over a faster path: the prompt pass is intact, decode it eagerly.
                log.warning("static decode failed (%s); using the dynamic loop from now on", err)
                self.fallback, self._static = f"{type(err).__name__}: {err}"[:300], None
                out_tok, out_lp, ran = self._dynamic_loop(model, logits, pre, sampling, uniforms)
        tok, lp = out_tok.cpu(), out_lp.cpu()
        clock["prefill_s"] += t1 - t0
        clock["decode_s"] += _now(device) - t1
        clock["decode_steps"] += ran
        eos = set(self.eos_ids.tolist())
        out_tokens, out_logps = [], []
        for i in range(len(prompts)):
            row = tok[i].tolist()
            end = next((t + 1 for t, x in enumerate(row) if x in eos), len(row))
            out_tokens.append(row[:end])
            out_logps.append(lp[i, :end].tolist())
        return out_tokens, out_logps

    def _dynamic_loop(
        self, model, logits: torch.Tensor, pre: Prefill, sampling: Sampling, uniforms: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        device, steps = logits.device, sampling.max_new_tokens
        cache, attention, next_pos = pre.cache, pre.attention, pre.next_pos
        if int(pre.copy_of.numel()) > len(cache.layers[0].keys):  # rows share prompts: copy their cache
            cache.batch_select_indices(pre.copy_of)
        b = logits.shape[0]
        out_tok = torch.full((b, steps), self.pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros((b, steps), dtype=torch.float32, device=device)
        live = torch.arange(b, device=device)  # original row of each row still in the batch
        done = torch.zeros(b, dtype=torch.bool, device=device)  # finished, not yet dropped
        ran = 0
        for t in range(steps):
            nxt, lp = next_tokens(logits, sampling, None if uniforms is None else uniforms[t, live])
            rec = ~done
            out_tok[live[rec], t] = nxt[rec]
            out_lp[live[rec], t] = lp[rec]
            done = done | torch.isin(nxt, self.eos_ids)
            n_done = int(done.sum())
            if n_done == len(live) or t == steps - 1:
                break
            if n_done and n_done >= self.DROP_SHARE * len(live):
                keep = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, nxt, attention, next_pos = live[keep], nxt[keep], attention[keep], next_pos[keep]
                done = done[keep]
            attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=1)
            logits = next_token_logits(
                model.model,
                model.lm_head,
                cache,
                input_ids=nxt[:, None],
                attention_mask=attention,
                position_ids=next_pos,
            )
            next_pos = next_pos + 1
            ran += 1
        return out_tok, out_lp, ran


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
