"""The command-line client of a RAPID server (``rapid jobs ...``, ``rapid files ...``) and the
functions behind it, usable from Python. It needs only the official ``openai`` client (plus tqdm
and PyYAML): no torch, and nothing of the server's own packages."""

from rapid_client.connection import ClientError, connect
from rapid_client.jobs import (
    best_checkpoint,
    create_job,
    download_adapter,
    held_out,
    metrics,
    preflight,
    upload,
)
from rapid_client.progress import follow

__all__ = [
    "ClientError",
    "best_checkpoint",
    "connect",
    "create_job",
    "download_adapter",
    "follow",
    "held_out",
    "metrics",
    "preflight",
    "upload",
]
