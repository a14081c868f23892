"""``python -m worker [celery worker options]``: one job at a time, on this machine's queues."""

from __future__ import annotations

import shutil
import socket
import sys
import uuid

from rapid_core.errors import ConfigError
from store.settings import get_settings


def default_queues() -> str:
    # nvidia-smi, not torch.cuda: the prefork parent must not initialise CUDA before it forks.
    return "cpu,cuda" if shutil.which("nvidia-smi") else "cpu"


def main(argv: list[str] | None = None) -> None:
    try:
        settings = get_settings()
    except ConfigError as err:  # an unknown RAPID_* variable: refuse to start, naming it
        sys.exit(f"python -m worker: error: {err}")
    settings.ensure_dirs()
    from worker.app import celery

    queues = settings.worker_queues or default_queues()
    name = f"rapid-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    args = ["worker", "-Q", queues, "-c", "1", "-n", name, "--loglevel", "INFO", *(argv or [])]
    celery.worker_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
