"""Run a pre-flight: the job's first prompts x G sampled with the base model and graded through the
job's own grader (its sandbox included), one optimizer step timed, and the report stored.

It writes nothing a job reads: no job row, events, metrics, checkpoints or adapter; its scratch
folder is deleted. Bounded in time: it starts only before its deadline, samples prompt chunks only
while time is left (always at least one), and skips the timed step when none is.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from rapid_core.config import RunPaths, TrainConfig
from rapid_core.model_source import download_model
from rapid_core.preflight import Measured, job_size, preflight_report
from store.artifacts import LocalArtifacts
from store.db import transact
from store.repos import Files, Preflights
from store.settings import Settings
from worker.runner import failure

log = logging.getLogger("rapid.worker")


def run_preflight(preflight_id: str, settings: Settings, sessions: sessionmaker[Session]) -> str:
    """Returns what happened: skipped, succeeded or failed."""
    retry = settings.db_retry_seconds

    def claim(s: Session):
        row = Preflights(s).by_id(preflight_id)
        if row is None or not Preflights(s).start(preflight_id):
            return None
        training = Files(s).by_id(row.training_file)
        if training is None:  # deleted since: a pre-flight does not hold its file as a job does
            Preflights(s).fail(
                preflight_id,
                {
                    "code": "invalid_job",
                    "param": "training_file",
                    "message": f"The training file {row.training_file} was deleted",
                },
            )
            return None
        return dict(row.config), training.storage_key, row.prompts, row.deadline

    claimed = transact(sessions, claim, retry_for=retry)
    if claimed is None:  # a second delivery, or it waited in the queue past its deadline
        return "skipped"
    config, training_key, prompts, deadline = claimed
    scratch = Path(tempfile.mkdtemp(prefix=f"{preflight_id}-", dir=settings.runs_dir))
    try:
        cfg = TrainConfig.model_validate(config)
        paths = RunPaths(
            output_dir=scratch, data_path=str(LocalArtifacts(settings.artifacts_dir).local_path(training_key))
        )
        report = measure(cfg, paths, prompts, deadline)
        transact(sessions, lambda s: Preflights(s).succeed(preflight_id, report), retry_for=retry)
        return "succeeded"
    except Exception as err:
        log.exception("pre-flight %s failed", preflight_id)
        error = failure(err, scratch)
        transact(sessions, lambda s: Preflights(s).fail(preflight_id, error), retry_for=retry)
        return "failed"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(cfg: TrainConfig, paths: RunPaths, prompts: int, deadline: float) -> dict:
    """Sample and grade ``prompts`` x G of the job's first prompts, time one optimizer step, report."""
    download_model(cfg.model, progress=lambda message: log.info("pre-flight: %s", message))
    import torch  # torch loads here, in the worker's child only

    from rapid_core.advantages import group_advantages
    from rapid_core.engines import Sampling, make_engine
    from rapid_core.graders import build_grader
    from rapid_core.losses import LOSSES
    from rapid_core.models import load_policy, prompt_token_ids
    from rapid_core.plan import prompt_indices
    from rapid_core.state import RunState
    from rapid_core.tasks import load_task
    from rapid_core.update import make_optimizer, optimizer_step

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    task = load_task(cfg, paths)  # the job's records and grader, as the trainer loads them
    grader = build_grader(task.grader)
    policy = load_policy(cfg)
    engine = make_engine(cfg, policy)
    g, sampling = cfg.group_size, Sampling(cfg.temperature, cfg.max_new_tokens)
    order = prompt_indices(
        len(task.train), 0, min(prompts, len(task.train)), cfg.seed
    )  # the job's first prompts
    chunk = max(1, cfg.gen_micro_batch // g)  # prompts per generate call, as the engine batches a round
    scores, statuses, lengths, truncated, latencies = [], [], [], [], []
    generate_s = grade_s = 0.0
    first_failure, last = "", None
    for start in range(0, len(order), chunk):
        if start and time.time() >= deadline:
            break  # out of time: report what was measured
        records = [task.train[i] for i in order[start : start + chunk]]
        t0 = time.perf_counter()
        rollouts = engine.generate(
            [prompt_token_ids(policy.tokenizer, r["messages"]) for r in records], g, sampling
        )
        t1 = time.perf_counter()
        grades = grader.grade_batch([r for r in records for _ in range(g)], rollouts.texts)
        generate_s, grade_s = generate_s + t1 - t0, grade_s + time.perf_counter() - t1
        scores += [gr.score for gr in grades]
        statuses += [gr.status for gr in grades]
        latencies += [gr.seconds for gr in grades]
        lengths += [len(c) for c in rollouts.completion_ids]
        truncated += [reason == "length" for reason in rollouts.finish_reasons]
        first_failure = first_failure or next(
            (gr.detail for gr in grades if gr.status not in ("ok", "wrong")), ""
        )
        last = (rollouts, torch.tensor([gr.score for gr in grades], dtype=torch.float32))

    step_s = None
    if time.time() < deadline:
        # One optimizer step on the last chunk's samples (up to a mini-batch), scaled to a full one.
        rollouts, rewards = last
        adv, _ = group_advantages(rewards, g, scale=cfg.adv_scale, baseline=cfg.adv_baseline)
        state = RunState(cfg, paths, policy, make_optimizer(cfg, policy))
        rows = list(range(min(cfg.mini_batch_size, len(rollouts))))
        t0 = time.perf_counter()
        optimizer_step(state, rollouts, adv, rows, 0, LOSSES.get(cfg.algorithm, "algorithm"))
        step_s = (time.perf_counter() - t0) * cfg.mini_batch_size / len(rows)
    measured = Measured(
        scores=scores,
        statuses=statuses,
        completion_tokens=lengths,
        truncated=truncated,
        grade_seconds=latencies,
        group_size=g,
        max_new_tokens=cfg.max_new_tokens,
        generate_s=generate_s,
        grade_s=grade_s,
        train_step_s=step_s,
        first_failure=first_failure,
    )
    return preflight_report(measured, job_size(cfg)) | {"device": str(policy.device), "model": cfg.model}
