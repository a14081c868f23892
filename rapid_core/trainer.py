"""The RAPID loop (RAPID.md "One round"): snapshot, generate a large batch, reward, group
advantages, shuffle into mini-batches, one optimizer step each. The baselines ``grpo`` and ``pg``
run through the same loop with B = m (one step per round) and their own loss.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rapid_core.advantages import group_advantages
from rapid_core.callbacks import Callback, CallbackList
from rapid_core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rapid_core.config import TrainConfig
from rapid_core.engines import Rollouts, Sampling, make_engine
from rapid_core.errors import Cancelled, ConfigError, GraderError
from rapid_core.evaluation import evaluate
from rapid_core.graders import build_grader, checker_health, grade_latency_stats, status_counts
from rapid_core.logprobs import completion_logps
from rapid_core.losses import LOSSES, LossSettings
from rapid_core.models import Policy, load_policy, prompt_token_ids, save_adapter
from rapid_core.report_to import build_reporters
from rapid_core.reporting import MetricsWriter, ProgressBar
from rapid_core.tasks import load_task


def prompt_indices(n_records: int, position: int, count: int, seed: int) -> list[int]:
    """Prompts ``position .. position + count`` of an endless stream of seeded epoch permutations.
    A pure function of the position, so the data position in a checkpoint is one integer."""
    out = []
    for pos in range(position, position + count):
        epoch, offset = divmod(pos, n_records)
        perm = list(range(n_records))
        random.Random(f"{seed}-epoch-{epoch}").shuffle(perm)
        out.append(perm[offset])
    return out


@dataclass
class Batch:
    """The samples of one round, ready for mini-batch updates."""

    rollouts: Rollouts
    advantages: torch.Tensor  # [B]
    rewards: torch.Tensor  # [B]


class Trainer:
    def __init__(self, cfg: TrainConfig, callbacks: list[Callback] | None = None, progress: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.task = load_task(cfg)  # fails on bad data before the model loads
        self.grader = build_grader(self.task.grader)
        cbs: list[Callback] = [MetricsWriter(self.out / "metrics.jsonl")]
        cbs += [ProgressBar()] if progress else []
        cbs += build_reporters(cfg)  # report_to: TensorBoard / W&B, off by default
        self.callbacks = CallbackList(cbs + list(callbacks or []))
        self.loss_fn = LOSSES.get(cfg.algorithm, "algorithm")
        self.loss_settings = LossSettings(
            is_level=cfg.is_level,
            is_clip=cfg.is_clip,
            norm=cfg.norm,
            max_new_tokens=cfg.max_new_tokens,
            ppo_epsilon=cfg.ppo_epsilon,
            kl_beta=cfg.kl_beta,
        )
        if cfg.kl_beta > 0 and cfg.finetune != "lora":
            raise ConfigError(
                "a KL reference needs finetune=lora (the base model with the adapter off)", "kl_beta"
            )

    # --- setup -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.policy: Policy = load_policy(cfg)
        options: dict[str, Any] = {"micro_batch": cfg.gen_micro_batch}
        if cfg.engine == "vllm":
            from rapid_core.models import _dense_dir, resolve_model

            options |= {"model_dir": _dense_dir(resolve_model(cfg.model)), "lora_rank": cfg.lora_r}
        self.engine = make_engine(cfg.engine, self.policy, **options)
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        self.prompts = [prompt_token_ids(self.policy.tokenizer, r["messages"]) for r in self.task.train]
        self.state: dict[str, Any] = {
            "round": 0,
            "step": 0,
            "samples": 0,
            "position": 0,
            "elapsed_s": 0.0,
            "trained_tokens": 0,
            "eval_before": None,
        }
        ckpt = latest_checkpoint(self.out)
        if ckpt is not None:
            self.state.update(load_checkpoint(ckpt, self.policy, self.optimizer, self.scheduler))

    def _total_rounds(self) -> int | None:
        cfg = self.cfg
        limits = [cfg.rounds] if cfg.rounds is not None else []
        if cfg.max_samples is not None:
            limits.append(-(-cfg.max_samples // cfg.inference_batch))
        return min(limits) if limits else None

    def _done(self) -> bool:
        cfg, s = self.cfg, self.state
        return (
            (cfg.rounds is not None and s["round"] >= cfg.rounds)
            or (cfg.max_samples is not None and s["samples"] >= cfg.max_samples)
            or (cfg.time_budget_s is not None and s["elapsed_s"] >= cfg.time_budget_s)
        )

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.model_dump(), indent=2))
        self._setup()
        cfg = self.cfg
        self.callbacks.on_start(
            {
                "algorithm": cfg.algorithm,
                "inference_batch": cfg.inference_batch,
                "batch_ratio": cfg.batch_ratio,
                "mini_batch_size": cfg.mini_batch_size,
                "start_round": self.state["round"],
                "total_rounds": self._total_rounds(),
                "device": str(self.policy.device),
                "dtype": str(self.policy.dtype),
            }
        )
        if cfg.eval_problems and cfg.eval_before and self.state["eval_before"] is None:
            self.state["eval_before"] = self._evaluate("before")
        while not self._done():
            started = time.perf_counter()
            self._round()
            self.state["elapsed_s"] += time.perf_counter() - started
            self.state["round"] += 1
            if self.state["round"] % cfg.checkpoint_every == 0 or self._done():
                self._checkpoint()
        final = self.out / "adapter"
        save_adapter(self.policy, final)
        summary = {
            "algorithm": cfg.algorithm,
            "rounds": self.state["round"],
            "steps": self.state["step"],
            "samples": self.state["samples"],
            "trained_tokens": self.state["trained_tokens"],
            "train_seconds": self.state["elapsed_s"],
            "eval_before": self.state["eval_before"],
            "eval_after": self._evaluate("after") if cfg.eval_problems else None,
            "adapter_dir": str(final),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        self.callbacks.on_end(summary)
        return summary

    def _round(self) -> None:
        cfg, k = self.cfg, self.state["round"]
        t0 = time.perf_counter()
        self._check_stop()
        # 1-2. mu := pi_theta (the engine samples from the current weights); draw P prompts x G.
        self.engine.sync_policy(k)
        idx = prompt_indices(len(self.prompts), self.state["position"], cfg.round_prompts, cfg.seed)
        rollouts = self.engine.generate(
            [self.prompts[i] for i in idx], cfg.group_size, Sampling(cfg.temperature, cfg.max_new_tokens)
        )
        t_gen = time.perf_counter()
        # 3. rewards.
        records = [self.task.train[i] for i in idx for _ in range(cfg.group_size)]
        grades = self.grader.grade_batch(records, rollouts.texts)
        healthy, why = checker_health(grades)
        if not healthy:  # the checker, not the policy, is failing: training on its zeros is meaningless
            raise GraderError(why)
        rewards = torch.tensor([g.score for g in grades], dtype=torch.float32)
        t_reward = time.perf_counter()
        # 4. group advantages.
        adv, zero_std = group_advantages(
            rewards, cfg.group_size, scale=cfg.adv_scale, baseline=cfg.adv_baseline
        )
        keep = torch.arange(len(rewards))
        if cfg.drop_zero_std:
            keep = keep[~zero_std.repeat_interleave(cfg.group_size)]
        # 5. shuffle into U mini-batches of m; step u is u optimizer steps away from mu.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        if cfg.minibatch_grouping == "groups":
            kept, g = set(keep.tolist()), cfg.group_size
            groups = torch.randperm(len(rewards) // g, generator=gen).tolist()
            order = [q * g + j for q in groups for j in range(g) if q * g + j in kept]
        else:
            order = keep[torch.randperm(len(keep), generator=gen)].tolist()
        batch = Batch(rollouts, adv, rewards)
        minibatches = [order[s : s + cfg.mini_batch_size] for s in range(0, len(order), cfg.mini_batch_size)]
        for u, mb in enumerate(minibatches):
            self._check_stop()
            self.callbacks.on_step(self._optimizer_step(batch, mb, staleness=u))
        t_train = time.perf_counter()

        self.state["position"] += cfg.round_prompts
        self.state["samples"] += len(rollouts)
        lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
        wall = t_train - t0
        self.callbacks.on_round(
            {
                "round": k,
                "step": self.state["step"],
                "samples": self.state["samples"],
                "reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std(unbiased=False)),
                "accuracy": sum(g.status == "ok" for g in grades) / len(grades),
                "frac_zero_std": float(zero_std.float().mean()),
                "completion_len_mean": float(lengths.mean()),
                "completion_len_max": int(lengths.max()),
                "truncated_share": sum(f == "length" for f in rollouts.finish_reasons) / len(rollouts),
                "staleness_mean": max(len(minibatches) - 1, 0) / 2,
                "staleness_max": max(len(minibatches) - 1, 0),
                "gen_s": t_gen - t0,
                "reward_s": t_reward - t_gen,
                "train_s": t_train - t_reward,
                "round_s": wall,
                "gen_tokens_per_s": rollouts.generated_tokens / max(t_gen - t0, 1e-9),
                "samples_per_s": len(rollouts) / max(wall, 1e-9),
                "grader_status": status_counts(grades),
                "grader_latency_s": grade_latency_stats(grades),
                "example": {"completion": rollouts.texts[0], "reward": float(rewards[0])},
            }
        )

    def _optimizer_step(self, batch: Batch, mb: list[int], staleness: int) -> dict[str, Any]:
        cfg, r = self.cfg, batch.rollouts
        self.optimizer.zero_grad(set_to_none=True)
        chunk = cfg.train_micro_batch or len(mb)
        total_tokens = sum(len(r.completion_ids[i]) for i in mb)
        agg: dict[str, float] = {}
        loss_total, ent_sum = 0.0, 0.0
        self.policy.model.train(True)
        for s in range(0, len(mb), chunk):
            part = mb[s : s + chunk]
            prompts = [r.prompt_ids[i] for i in part]
            comps = [r.completion_ids[i] for i in part]
            logp, entropy, mask = completion_logps(self.policy, prompts, comps, cfg.temperature)
            blogp = torch.zeros_like(logp)
            for j, i in enumerate(part):
                blogp[j, : len(comps[j])] = torch.tensor(r.behaviour_logps[i], device=logp.device)
            ref = None
            if cfg.kl_beta > 0:
                ref, _, _ = completion_logps(self.policy, prompts, comps, cfg.temperature, use_reference=True)
            adv = batch.advantages[part].to(logp.device)
            loss, metrics = self.loss_fn(logp, blogp, adv, mask, self.loss_settings, ref_logp=ref)
            # Chunks add up to the whole mini-batch's normaliser.
            n_tok = int(mask.sum())
            share = n_tok / max(total_tokens, 1) if cfg.norm == "token_mean" else len(part) / len(mb)
            (loss * share).backward()
            loss_total += float(loss.detach()) * share
            ent_sum += float((entropy * mask).sum())
            for key, v in metrics.items():
                if key == "w_min":
                    agg[key] = min(agg.get(key, v), v)
                elif key == "w_max":
                    agg[key] = max(agg.get(key, v), v)
                else:
                    agg[key] = agg.get(key, 0.0) + v * n_tok / max(total_tokens, 1)
        self.policy.model.train(False)
        params = self.policy.trainable_parameters()
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.state["step"] += 1
        self.state["trained_tokens"] += total_tokens
        return {
            "round": self.state["round"],
            "step": self.state["step"],
            "staleness": staleness,
            "loss": loss_total,
            "grad_norm": grad_norm,
            "lr": lr,
            "samples": len(mb),
            "tokens": total_tokens,
            "entropy": ent_sum / max(total_tokens, 1),
            **agg,
        }

    # --- helpers ---------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        request = self.callbacks.should_stop()
        if request:
            raise Cancelled(request)

    def _checkpoint(self) -> None:
        path = save_checkpoint(
            self.out,
            self.state["round"],
            self.policy,
            self.optimizer,
            self.scheduler,
            dict(self.state),
            keep=self.cfg.keep_checkpoints,
        )
        self.callbacks.on_checkpoint(path, self.state["round"])

    def _evaluate(self, phase: str) -> dict[str, Any]:
        cfg = self.cfg
        records = self.task.eval[: cfg.eval_problems]
        with torch.random.fork_rng():  # evaluation must not shift the training RNG stream
            torch.manual_seed(cfg.seed + (0 if phase == "before" else 1))
            metrics = evaluate(
                self.engine,
                self.policy.tokenizer,
                self.grader,
                records,
                k=cfg.eval_k,
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
            )
        self.callbacks.on_eval(phase, metrics)
        return metrics


def train(
    cfg: TrainConfig, callbacks: list[Callback] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run a whole job; resumes from the newest checkpoint in ``cfg.output_dir`` if there is one."""
    return Trainer(cfg, callbacks, progress=progress).run()
