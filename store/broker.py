"""The Celery app's configuration, shared by the API (which sends job messages by task name) and
the worker (which registers the task). Neither imports the other.

Every broker call has a timeout (``broker_timeout``): a frozen or unreachable broker fails a publish
within seconds instead of hanging the request; the outbox (store/dispatch.py) delivers it later.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis
from celery import Celery

from store.settings import Settings

RUN_JOB_TASK = "rapid.run_job"
PREFLIGHT_TASK = "rapid.preflight"  # a dry run of a job body (worker/preflight.py)
QUEUES = ("cpu", "cuda")


def make_celery(settings: Settings) -> Celery:
    app = Celery("rapid", broker=settings.broker_url)
    options: dict = {}
    if settings.broker_url.startswith("filesystem"):
        folder = str(settings.broker_dir / "queue")
        options = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "processed_folder": str(settings.broker_dir / "processed"),
            "control_folder": str(settings.broker_dir / "control"),  # kombu's default is ./control
            "store_processed": False,
        }
    elif settings.broker_url.startswith(("redis", "rediss")):
        options = {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_timeout": settings.broker_timeout,
            "socket_connect_timeout": settings.broker_timeout,
        }
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.broker_timeout,
        # A worker that loses the broker keeps training: the job's lease, not the message, says who runs it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_acks_late=True,  # a job's message stays until the job ends: a dead worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,  # one job at a time per worker process
        worker_max_tasks_per_child=1,  # a fresh child per job: the model's memory goes back when the job ends
        task_ignore_result=True,  # the job row is the result
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
    )
    return app


# One retry: a pooled connection to a broker that restarted fails once, then reconnects.
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# kombu's Redis layout: a list per queue (plus one per priority step) and a hash of unacknowledged messages.
REDIS_PRIORITY_SEP, REDIS_PRIORITIES, REDIS_UNACKED = "\x06\x16", (3, 6, 9), "unacked"


def enqueue_job(app: Celery, job_id: str, queue: str) -> None:
    """Publish the job's message; its task id starts with the job id so the broker can be searched."""
    app.send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=queue,
        task_id=f"{job_id}.{uuid.uuid4().hex[:8]}",
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )


def enqueue_preflight(app: Celery, preflight_id: str, queue: str) -> None:
    """Publish a pre-flight's message; its task id starts with the pre-flight's id."""
    app.send_task(
        PREFLIGHT_TASK,
        args=[preflight_id],
        queue=queue,
        task_id=f"{preflight_id}.{uuid.uuid4().hex[:8]}",
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )


def job_of_task(task_id: str) -> str:
    return task_id.split(".", 1)[0]


def jobs_in_broker(app: Celery, queues: tuple[str, ...] = QUEUES) -> set[str] | None:
    """Ids of the jobs whose message the broker holds, waiting or taken and not yet acknowledged;
    None for a broker this cannot list (then lost messages are not looked for)."""
    url, options = app.conf.broker_url, app.conf.broker_transport_options or {}
    if url.startswith(("redis", "rediss")):
        messages = _redis_messages(url, options, queues)
    elif url.startswith("filesystem"):
        messages = _folder_messages(Path(options["data_folder_in"]), queues)
    else:
        return None
    return {job_of_task(m["headers"]["id"]) for m in messages if m.get("headers", {}).get("id")}


def _redis_messages(url: str, options: dict, queues: tuple[str, ...]) -> list[dict]:
    prefix, timeout = options.get("global_keyprefix", ""), options.get("socket_timeout")
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for key in (queue, *(f"{queue}{REDIS_PRIORITY_SEP}{p}" for p in REDIS_PRIORITIES)):
                pipe.lrange(prefix + key, 0, -1)
        pipe.hvals(prefix + REDIS_UNACKED)
        *lists, unacked = pipe.execute()
    finally:
        client.close()
    waiting = [json.loads(raw) for items in lists for raw in items]
    return waiting + [json.loads(raw)[0] for raw in unacked]  # an unacked entry is [message, exchange, key]


def _folder_messages(folder: Path, queues: tuple[str, ...]) -> list[dict]:
    messages = []
    for path in folder.glob("*.msg"):
        if path.name.rsplit(".", 2)[-2] in queues:  # <time>_<uuid>.<queue>.msg
            try:
                messages.append(json.loads(path.read_bytes()))
            except (FileNotFoundError, json.JSONDecodeError):  # taken by a worker as we looked
                continue
    return messages


def broker_reachable(app: Celery, timeout: float = 2.0) -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
