"""Run untrusted Python in a separate, locked-down process tree (see ``backend`` for the walls).

``run_python(source)`` runs one program and classifies it; ``SandboxPool`` runs many at once, taking
owners (``owned_by``) in turn.
Nothing here ever executes untrusted code in the calling process.
"""

from rapid_core.sandbox.backend import SandboxInfo
from rapid_core.sandbox.pool import SandboxPool, default_pool, owned_by
from rapid_core.sandbox.runner import Limits, SandboxJob, SandboxResult, run, run_python, sandbox_info

__all__ = [
    "Limits",
    "SandboxInfo",
    "SandboxJob",
    "SandboxPool",
    "SandboxResult",
    "default_pool",
    "owned_by",
    "run",
    "run_python",
    "sandbox_info",
]
