"""Follow a job live: a progress bar over rounds with reward, accuracy, staleness and ETA, and the
job's events as they happen. Returns the finished job."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import openai
from openai.types.fine_tuning import FineTuningJob
from tqdm import tqdm

from rapid_client.jobs import TERMINAL, held_out, metrics, total_rounds

RECENT_ROUNDS = 5


def eta_seconds(rounds: list[dict[str, Any]], total: int | None, eval_seconds: float) -> float | None:
    """Mean time of the recent rounds times the rounds left, plus the final evaluation's time."""
    times = [r["round_s"] for r in rounds[-RECENT_ROUNDS:] if isinstance(r.get("round_s"), int | float)]
    if total is None or not times:
        return None
    return sum(times) / len(times) * max(total - len(rounds), 0) + eval_seconds


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Events:
    """Prints the job's message events once each, oldest first."""

    def __init__(self, client: openai.OpenAI, job_id: str, write):
        self.client, self.job_id, self.write, self.seen = client, job_id, write, set()

    def poll(self) -> None:
        page = self.client.fine_tuning.jobs.list_events(self.job_id, limit=100)
        for event in reversed(page.data):
            if event.id not in self.seen and event.type == "message":
                self.write(f"[{time.strftime('%H:%M:%S', time.localtime(event.created_at))}] {event.message}")
            self.seen.add(event.id)


def follow(
    client: openai.OpenAI,
    job_id: str,
    *,
    interval: float = 2.0,
    file: TextIO = sys.stderr,
    events: bool = True,
) -> FineTuningJob:
    """Poll the job until it ends. On a terminal: a live bar; elsewhere (logs, CI): a line per round."""
    job = client.fine_tuning.jobs.retrieve(job_id)
    total = total_rounds(job)
    tty = file.isatty()
    bar = tqdm(
        total=total,
        unit="round",
        desc=job_id,
        file=file,
        dynamic_ncols=True,
        disable=not tty,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rounds{postfix}",
    )

    def write(line: str) -> None:
        bar.write(line, file=file) if tty else print(line, file=file, flush=True)

    log = _Events(client, job_id, write) if events else None
    rounds: dict[int, dict[str, Any]] = {}
    eval_seconds: float | None = None
    shown = 0
    try:
        while True:
            if log:
                log.poll()
            since = max((r["step"] for r in rounds.values()), default=None)
            for record in metrics(client, job_id, "round", step_min=since):
                rounds[record["round"]] = {**record["metrics"], "step": record["step"]}
            ordered = [rounds[k] for k in sorted(rounds)]
            if ordered and eval_seconds is None:
                eval_seconds = (held_out(client, job_id).get("before") or {}).get("seconds") or 0.0
            status = _postfix(job, ordered, total, eval_seconds or 0.0)
            if tty:
                bar.set_postfix_str(status, refresh=False)
                bar.update(len(ordered) - bar.n)
            elif len(ordered) > shown or job.status in TERMINAL:
                write(f"{job_id}: round {len(ordered)}/{total or '?'}, {status}")
            shown = len(ordered)
            if job.status in TERMINAL:
                return job
            time.sleep(interval)
            job = client.fine_tuning.jobs.retrieve(job_id)
    finally:
        bar.close()


def _postfix(job: FineTuningJob, rounds: list[dict[str, Any]], total: int | None, eval_s: float) -> str:
    parts = [job.status]
    if rounds:
        last = rounds[-1]
        parts += [
            f"reward {last.get('reward_mean', 0):.3f}",
            f"acc {last.get('accuracy', 0):.3f}",
            f"stale {last.get('staleness_mean', 0):.1f}/{last.get('staleness_max', 0)}",
        ]
    if job.status in ("queued", "running"):
        eta = eta_seconds(rounds, total, eval_s)
        if eta is not None:
            parts.append(f"ETA {clock(eta)}")
    return ", ".join(parts)
