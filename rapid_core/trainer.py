"""The RAPID loop (RAPID.md "One round"): snapshot, generate a large batch, reward, group
advantages, shuffle into mini-batches, one optimizer step each, record metrics, callbacks.

The baselines ``grpo`` and ``pg`` run through the same loop with B = m (one step per round) and
their own loss. The details live in small modules the loop calls by name: ``plan`` (which prompts,
which mini-batches), ``update`` (one mini-batch's gradient), ``metrics`` (the records),
``checkpoint`` and ``reporting`` (callbacks that save the run).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import torch

from rapid_core.advantages import group_advantages, overlong_penalty
from rapid_core.batch_ratio import HISTORY, RoundRecord, late_health, limits, next_batch_ratio, step_series
from rapid_core.callbacks import Callback, CallbackList
from rapid_core.checkpoint import Checkpointer, checkpoint_dir, resume
from rapid_core.config import RunPaths, TrainConfig
from rapid_core.engines import Sampling, make_engine
from rapid_core.errors import Cancelled, GraderError
from rapid_core.evaluation import evaluate
from rapid_core.graders import Grade, build_grader, checker_health
from rapid_core.losses import LOSSES
from rapid_core.metrics import EvalMetrics, RoundClock, RoundMetrics, round_metrics
from rapid_core.models import load_policy, prompt_token_ids, save_adapter
from rapid_core.periodic_eval import BestFile, PeriodicEval
from rapid_core.plan import plan_minibatches, prompt_indices
from rapid_core.report_to import build_reporters
from rapid_core.reporting import MetricsWriter, ProgressBar, RunFiles
from rapid_core.state import RunState
from rapid_core.tasks import load_task
from rapid_core.update import make_optimizer, optimizer_step, run_fraction


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        paths: RunPaths,
        callbacks: list[Callback] | None = None,
        progress: bool = False,
    ):
        self.cfg, self.paths = cfg, paths
        self.task = load_task(cfg, paths)  # fails on bad data before the model loads
        self.grader = build_grader(self.task.grader)
        self.loss = LOSSES.get(cfg.algorithm, "algorithm")
        reporters = [
            MetricsWriter(paths.metrics_file),
            RunFiles(cfg, paths),
            *([ProgressBar()] if progress else []),
            *build_reporters(cfg, paths),  # report_to: TensorBoard / W&B, off by default
        ]
        self.callbacks = CallbackList(reporters + list(callbacks or []) + [BestFile(paths.output_dir)])
        self.periodic = PeriodicEval(cfg, checkpoint_dir(paths.output_dir), self._evaluate)  # eval_interval
        self.callbacks.append(
            Checkpointer(cfg.checkpoint_every, cfg.keep_checkpoints, self.callbacks.on_checkpoint)
        )

    def _setup(self) -> RunState:
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        policy = load_policy(cfg)
        self.engine = make_engine(cfg, policy)
        self.prompts = [prompt_token_ids(policy.tokenizer, r["messages"]) for r in self.task.train]
        state = RunState(cfg, self.paths, policy, make_optimizer(cfg, policy))
        resume(state)  # from the newest checkpoint in the output directory, if there is one
        return state

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.paths.output_dir.mkdir(parents=True, exist_ok=True)
        cfg, s = self.cfg, self._setup()
        self.state, progress = s, s.progress
        self.callbacks.on_start(s.info())
        if cfg.eval_problems and cfg.eval_before and progress.eval_before is None:
            progress.eval_before = self._evaluate("before").to_dict()
        while not s.finished:
            started = time.perf_counter()
            self.callbacks.on_round(self._round(s))
            progress.elapsed_s += time.perf_counter() - started
            progress.round += 1
            self.periodic.at_boundary(s)  # held-out evaluation every eval_interval steps, off the clock
            self.callbacks.on_round_end(s)  # the Checkpointer saves the run here
        save_adapter(s.policy, self.paths.adapter_dir)
        summary = s.summary(self._evaluate_after().to_dict() if cfg.eval_problems else None)
        self.callbacks.on_end(summary)
        return summary

    def _round(self, s: RunState) -> RoundMetrics:
        cfg, k = self.cfg, s.progress.round
        cuda = s.policy.device.type == "cuda"
        if cuda:  # the round's peak GPU memory, generation and training, so users can size jobs
            torch.cuda.reset_peak_memory_stats(s.policy.device)
        t0 = time.perf_counter()
        self._check_stop()
        # 1-2. mu := pi_theta (the engine samples from the current weights); draw P prompts x G.
        self.engine.sync_policy(k)
        ratio, why = self._batch_ratio(s)
        n_prompts = ratio * cfg.mini_batch_size // cfg.group_size if cfg.auto_batch else cfg.round_prompts
        idx = prompt_indices(len(self.prompts), s.progress.position, n_prompts, cfg.seed)
        sampling = Sampling(cfg.temperature, cfg.max_new_tokens)
        rollouts = self.engine.generate([self.prompts[i] for i in idx], cfg.group_size, sampling)
        t_gen = time.perf_counter()
        # 3. rewards.
        grades = self._grade([self.task.train[i] for i in idx for _ in range(cfg.group_size)], rollouts.texts)
        rewards = torch.tensor([g.score for g in grades], dtype=torch.float32)
        lengths = torch.tensor([len(c) for c in rollouts.completion_ids])
        penalty = overlong_penalty(lengths, cfg.max_new_tokens, cfg.overlong_buffer)
        rewards = rewards + penalty
        t_reward = time.perf_counter()
        # 4. group advantages.
        adv, zero_std = group_advantages(
            rewards, cfg.group_size, scale=cfg.adv_scale, baseline=cfg.adv_baseline
        )
        # 5. shuffle into U mini-batches of m; one optimizer step each, step u is u steps away from mu.
        truncated = torch.tensor([f == "length" for f in rollouts.finish_reasons])
        minibatches = plan_minibatches(cfg, zero_std, k, truncated)
        steps = []
        for u, rows in enumerate(minibatches):
            self._check_stop()
            # Training seconds so far, as stop_reached counts them against time_budget_s.
            elapsed = s.progress.elapsed_s + time.perf_counter() - t0
            fraction = run_fraction(cfg, s.progress, len(rollouts), u, len(minibatches), elapsed)
            steps.append(optimizer_step(s, rollouts, adv, rows, u, self.loss, fraction))
            self.callbacks.on_step(steps[-1])
        s.progress.position += n_prompts
        s.progress.samples += len(rollouts)
        clock = RoundClock(t0, t_gen, t_reward, time.perf_counter())
        peak = torch.cuda.max_memory_allocated(s.policy.device) / 2**30 if cuda else None
        metrics = round_metrics(
            s.progress, rollouts, grades, zero_std, len(minibatches), clock, peak, (ratio, why), penalty
        )
        if cfg.auto_batch:  # what the controller reads next round; checkpointed with the progress
            step_dicts = [m.to_dict() for m in steps]
            record = RoundRecord(
                ratio,
                len(rollouts),
                metrics.gen_s,
                metrics.reward_s,
                metrics.train_s,
                *late_health(step_dicts),
                peak,
                **step_series(step_dicts),
                decode_steps=metrics.completion_len_max,
            )
            s.progress.batch_history = [*s.progress.batch_history, record.to_dict()][-HISTORY:]
        return metrics

    def _batch_ratio(self, s: RunState) -> tuple[int, str]:
        """This round's U, and why when batch_ratio_control=auto picked it."""
        cfg = self.cfg
        if not cfg.auto_batch:
            return cfg.batch_ratio, ""
        device = s.policy.device
        mem = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
        history = [RoundRecord(**r) for r in s.progress.batch_history]
        decision = next_batch_ratio(history, limits(cfg, s.progress.samples, mem))
        return decision.batch_ratio, decision.reason

    # --- helpers ---------------------------------------------------------------------------------
    def _grade(self, records: list[dict[str, Any]], texts: list[str]) -> list[Grade]:
        grades = self.grader.grade_batch(records, texts)
        healthy, why = checker_health(grades)
        if not healthy:  # the checker, not the policy, is failing: training on its zeros is meaningless
            raise GraderError(why)
        return grades

    def _check_stop(self) -> None:
        request = self.callbacks.should_stop()
        if request:
            raise Cancelled(request)

    def _evaluate(self, phase: str) -> EvalMetrics:
        cfg, records = self.cfg, self.task.eval[: self.cfg.eval_problems]
        with torch.random.fork_rng():  # evaluation must not shift the training RNG stream
            torch.manual_seed(cfg.seed + (0 if phase == "before" else 1))
            sampling = {"k": cfg.eval_k, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens}
            metrics = evaluate(self.engine, self.state.policy.tokenizer, self.grader, records, **sampling)
        metrics = replace(metrics, step=self.state.progress.step, round=self.state.progress.round)
        self.callbacks.on_eval(phase, metrics)
        return metrics

    def _evaluate_after(self) -> EvalMetrics:
        """The final evaluation; a periodic one of the same final weights is not run twice."""
        metrics = self.periodic.final(self.state.progress)
        if metrics is None:
            return self._evaluate("after")
        self.callbacks.on_eval("after", metrics)
        return metrics


def train(
    cfg: TrainConfig, paths: RunPaths, callbacks: list[Callback] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run a whole job; resumes from the newest checkpoint in ``paths.output_dir`` if there is one.
    Returns the summary (also written to summary.json)."""
    return Trainer(cfg, paths, callbacks, progress=progress).run()
