"""The ``hf`` engine: a batched KV-cache decode loop in transformers.

A hand-written loop rather than ``generate()``: it returns the sampled tokens' log-probs at the
sampling temperature from the same forward pass (no second pass, no stored vocabulary-sized logits),
and it samples exactly softmax(logits / T) (top_p = 1, top_k = 0), so mu is what was sampled.
What makes it fast (docs/perf-notes.md): it samples from a merged copy of the policy in the compute
dtype (``SamplingModel``), runs the prompt forward pass once per distinct prompt and copies its KV
cache to the prompt's G rows, and drops finished rows from the batch.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from rapid_core.config import TrainConfig
from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.engines.sampling_model import SamplingModel
from rapid_core.kvcache import cache_kwarg, distinct_prompts, left_padded
from rapid_core.models import Policy


def sample_categorical(logp: torch.Tensor) -> torch.Tensor:
    """One draw per row from exp(logp) by inverse CDF: one uniform per row instead of the vocabulary-
    sized exponential noise torch.multinomial draws (~50 ms a step at batch 64 on this CPU)."""
    cdf = logp.double().exp().cumsum(dim=-1)
    u = torch.rand(logp.shape[0], 1, dtype=cdf.dtype, device=logp.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=logp.shape[1] - 1)


@ENGINES.register("hf")
class HFEngine(Engine):
    # Drop finished rows once this share of the live batch has finished (each drop copies the cache).
    DROP_SHARE = 0.125

    def __init__(self, policy: Policy, micro_batch: int = 64, **_: object):
        self.policy = policy
        self.micro_batch = micro_batch
        self.sampler = SamplingModel(policy)
        tok = policy.tokenizer
        eos = policy.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        self.eos_ids = torch.tensor(sorted(i for i in eos_ids if i is not None), device=policy.device)
        self.pad_id = tok.pad_token_id

    @classmethod
    def from_config(cls, cfg: TrainConfig, policy: Policy) -> HFEngine:
        return cls(policy, micro_batch=cfg.gen_micro_batch)

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> Rollouts:
        rows = [p for p in prompts for _ in range(n)]
        # Longest prompts first so each micro-batch holds similar lengths (less left padding); the
        # sort is stable, so the n copies of a prompt stay together and share one prompt pass.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        completions: list[list[int]] = [[] for _ in rows]
        logps: list[list[float]] = [[] for _ in rows]
        model = self.sampler.get()
        for start in range(0, len(order), self.micro_batch):
            idx = order[start : start + self.micro_batch]
            toks, lps = self._decode(model, [rows[i] for i in idx], sampling)
            for j, i in enumerate(idx):
                completions[i], logps[i] = toks[j], lps[j]
        eos = set(self.eos_ids.tolist())
        finish = ["stop" if c and c[-1] in eos else "length" for c in completions]
        texts = self.policy.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return Rollouts(rows, completions, logps, texts, finish)

    @torch.inference_mode()
    def _decode(self, model, prompts: list[list[int]], sampling: Sampling) -> tuple[list[list[int]], list[list[float]]]:
        device, steps = self.policy.device, sampling.max_new_tokens
        decoder, lm_head = model.model, model.lm_head
        cache_kw = cache_kwarg(decoder)
        uniq, copy_of = distinct_prompts(prompts, device)
        input_ids, attention, positions = left_padded(uniq, self.pad_id, device)
        cache = DynamicCache()

        def next_logits(**inputs) -> torch.Tensor:
            # Output layer on the last position only, as a 2-D matmul (a 3-D slice here makes
            # torch expand the tied weight per row: a 1.8 G-element copy for SmolLM2 at batch 64).
            hidden = decoder(**inputs, **{cache_kw: cache}, use_cache=True).last_hidden_state
            return lm_head(hidden[:, -1, :].contiguous()).float()

        logits = next_logits(input_ids=input_ids, attention_mask=attention, position_ids=positions)
        if len(uniq) < len(prompts):  # one prompt pass per distinct prompt, copied to its rows
            cache.batch_select_indices(copy_of)
            logits, attention = logits[copy_of], attention[copy_of]
        next_pos = positions[copy_of, -1:] + 1
        b = len(prompts)
        out_tok = torch.full((b, steps), self.pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros((b, steps), dtype=torch.float32, device=device)
        live = torch.arange(b, device=device)  # original row of each row still in the batch
        done = torch.zeros(b, dtype=torch.bool, device=device)  # finished, not yet dropped
        for t in range(steps):
            if sampling.greedy:
                logp = torch.log_softmax(logits, dim=-1)
                nxt = logp.argmax(dim=-1)
            else:
                logp = torch.log_softmax(logits / sampling.temperature, dim=-1)
                nxt = sample_categorical(logp)
            rec = ~done
            out_tok[live[rec], t] = nxt[rec]
            out_lp[live[rec], t] = logp.gather(1, nxt[:, None]).squeeze(1)[rec].float()
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
            logits = next_logits(input_ids=nxt[:, None], attention_mask=attention, position_ids=next_pos)
            next_pos = next_pos + 1
        tok, lp = out_tok.cpu(), out_lp.cpu()
        eos = set(self.eos_ids.tolist())
        out_tokens, out_logps = [], []
        for i in range(b):
            row = tok[i].tolist()
            end = next((t + 1 for t, x in enumerate(row) if x in eos), len(row))
            out_tokens.append(row[:end])
            out_logps.append(lp[i, :end].tolist())
        return out_tokens, out_logps
