"""The Celery app's configuration, shared by the API (which sends job messages by task name) and
the worker (which registers the task). Neither imports the other."""

from __future__ import annotations

from celery import Celery

from store.settings import Settings

RUN_JOB_TASK = "rapid.run_job"
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
        options = {"visibility_timeout": settings.broker_visibility_timeout}
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        task_acks_late=True,  # a job's message stays until the job ends: a dead worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,  # one job at a time per worker process
        task_ignore_result=True,  # the job row is the result
        task_default_queue="cpu",
        worker_hijack_root_logger=False,
    )
    return app


def enqueue_job(app: Celery, job_id: str, queue: str) -> None:
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def broker_reachable(app: Celery, timeout: float = 2.0) -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
