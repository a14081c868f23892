"""Each project's bounded share of grading in one API process.

A grader run (``/fine_tuning/alpha/graders/run``) may take minutes of sandboxed code, so it runs on
threads of its own (at most ``grader_runs_total``), never on the threads that serve every other
request, and never with a database connection open. One project has at most
``grader_runs_per_project`` runs going; another one is answered 429 with Retry-After at once
rather than queued behind them. Inside the sandbox pool the project owns its runs, so the pool
takes projects in turn (``rapid_core.sandbox.owned_by``).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import anyio

from api.errors import TooManyRequests

T = TypeVar("T")
RETRY_AFTER_S = 2  # most runs take a second or two


class GraderGate:
    def __init__(self, per_project: int, total: int):
        self.per_project = per_project
        self._threads = anyio.CapacityLimiter(total)
        self._active: Counter[str] = Counter()  # touched on the event loop only: no lock needed

    async def run(self, project: str, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a grading thread, as the project's run; 429 when it has too many going."""
        from rapid_core.sandbox import owned_by

        if self._active[project] >= self.per_project:
            raise TooManyRequests(
                f"This project already has {self.per_project} grader runs in progress; "
                "retry when one of them finishes",
                RETRY_AFTER_S,
            )
        self._active[project] += 1
        try:
            with owned_by(project):  # the worker thread runs in a copy of this context
                return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._threads)
        finally:
            self._active[project] -= 1
            if not self._active[project]:
                del self._active[project]
