"""The ``rapid`` command: the one place that joins the core's commands with the service's.

``train`` and ``eval`` come from rapid_core.cli; ``serve`` and ``keys`` from the service; ``jobs``
and ``files`` from the client (rapid_client), which talks to a server over HTTP.
"""

from __future__ import annotations

import sys

SERVICE_COMMANDS = {"serve": "serve_main", "keys": "keys_main"}
CLIENT_COMMANDS = ("jobs", "files")


def environment_problem() -> str | None:
    """Why the environment is refused (an unknown ``RAPID_*`` variable), or None."""
    from rapid_core.errors import ConfigError
    from rapid_core.settings import CoreSettings, check_environment, env_names
    from store.settings import Settings

    try:
        check_environment(env_names(Settings) | env_names(CoreSettings))
    except ConfigError as err:
        return str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = environment_problem()
    if problem:
        print(f"rapid: error: {problem}", file=sys.stderr)
        return 2
    if argv and argv[0] in SERVICE_COMMANDS:
        from api import cli

        return int(getattr(cli, SERVICE_COMMANDS[argv[0]])(argv[1:]) or 0)
    if argv and argv[0] in CLIENT_COMMANDS:
        from rapid_client.cli import main as client_main

        return client_main(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: rapid {train,eval,serve,keys,jobs,files} ...\n\n"
            "  train   fine-tune a model with RAPID (or the grpo / pg baselines)\n"
            "  eval    held-out pass@1 / pass@k of a model, with or without an adapter\n"
            "  serve   run the job service: REST API + worker\n"
            "  keys    create, list and revoke API keys\n"
            "  jobs    create, follow, cancel, download ... jobs on a server (RAPID_BASE_URL, RAPID_API_KEY)\n"
            "  files   upload and list training files on a server\n\n"
            "rapid COMMAND --help shows a command's options."
        )
        return 0 if argv else 2
    from rapid_core.cli import main as core_main

    return core_main(argv)


if __name__ == "__main__":
    sys.exit(main())
