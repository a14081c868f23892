"""``rapid jobs ...`` and ``rapid files ...``: the command-line client of a RAPID server.

It talks to the server at --base-url / RAPID_BASE_URL / OPENAI_BASE_URL (default: a local
``rapid serve`` at http://127.0.0.1:8000/v1) with the key in --api-key / RAPID_API_KEY /
OPENAI_API_KEY, through the official ``openai`` client. Exit status: 0 on success, 1 when the
server refuses or the followed job does not succeed, 2 for a bad command line or local file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import openai

from rapid_client import jobs
from rapid_client.connection import ClientError, connect
from rapid_client.progress import follow
from rapid_client.specs import parse_grader, parse_hyperparameters

DEFAULT_MODEL = "smollm2-135m-instruct"
EPILOG = """examples:
  export RAPID_API_KEY=$(rapid keys create --project demo)
  rapid jobs create --training-file train.jsonl --validation-file eval.jsonl \\
      --grader 'numeric:{{item.answer}}' --hp rounds=12 --hp learning_rate=3e-4 --follow
  rapid jobs preflight --training-file train.jsonl --grader 'numeric:{{item.answer}}' --hp rounds=12
  rapid jobs list
  rapid jobs follow ftjob-...          # exits 1 if the job fails or is cancelled
  rapid jobs download ftjob-... -o adapter/
  rapid jobs download ftjob-... --best  # with --hp eval_interval=N: the best-scoring checkpoint
"""


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _json(obj: Any) -> None:
    print(json.dumps(obj.model_dump() if hasattr(obj, "model_dump") else obj, indent=2))


# --- commands ------------------------------------------------------------------------------------


def cmd_create(client: openai.OpenAI, args: argparse.Namespace) -> int:
    job = jobs.create_job(
        client,
        model=args.model,
        training_file=args.training_file,
        validation_file=args.validation_file,
        grader=parse_grader(args.grader),
        hyperparameters=parse_hyperparameters(args.hp, args.hyperparameters),
        seed=args.seed,
        suffix=args.suffix,
    )
    print(job.id)
    print(
        f"created {job.id} ({job.status}): `rapid jobs follow {job.id}` shows its progress", file=sys.stderr
    )
    return cmd_follow(client, argparse.Namespace(job=job.id, interval=args.interval)) if args.follow else 0


def cmd_preflight(client: openai.OpenAI, args: argparse.Namespace) -> int:
    run = jobs.preflight(
        client,
        model=args.model,
        training_file=args.training_file,
        grader=parse_grader(args.grader),
        hyperparameters=parse_hyperparameters(args.hp, args.hyperparameters),
        seed=args.seed,
        prompts=args.prompts,
        timeout_s=args.timeout,
        interval=args.interval,
    )
    if args.json:
        _json(run)
    elif run["status"] == "succeeded":
        print(preflight_text(run))
    if run["status"] != "succeeded":
        error = run.get("error") or {}
        print(f"pre-flight {run['id']} {run['status']}: {error.get('message', 'no report')}", file=sys.stderr)
        return 1
    return 0


def preflight_text(run: dict[str, Any]) -> str:
    """A pre-flight's report as a person reads it."""
    r = run["report"]
    reward, grader, lengths = r["reward"], r["grader"], r["completions"]
    lat, eta = grader["latency_s"], r["eta"]
    lines = [
        f"pre-flight {run['id']}: {r['prompts']} prompts x {r['group_size']} samples of {r['model']} "
        f"on queue {run['queue']} ({r['device']})",
        f"  reward         mean {reward['mean']:.3f}  std {reward['std']:.3f}  pass rate {reward['pass_rate']:.0%}",
        f"  no signal      {r['zero_variance_share']:.0%} of groups have identical rewards",
        f"  grader         {grader['errors']} errors, {grader['timeouts']} timeouts, "
        f"{grader['sandbox_failures']} sandbox failures; latency p50 {lat['p50']:.3f} s  p90 {lat['p90']:.3f} s  "
        f"p99 {lat['p99']:.3f} s",
        f"  completions    {lengths['tokens']['mean']:.1f} tokens on average (max {lengths['tokens']['max']:.0f}); "
        f"{lengths['truncated_share']:.0%} hit max_new_tokens={lengths['max_new_tokens']}",
        f"  eta            {_seconds(eta['seconds'])} for the whole job: {eta['basis']}",
    ]
    lines += [f"  warning: {w}" for w in r["warnings"] if not w.startswith("Estimated time")]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f} s ({value / 60:.1f} min)"


def cmd_list(client: openai.OpenAI, args: argparse.Namespace) -> int:
    page = client.fine_tuning.jobs.list(limit=args.limit)
    if args.json:
        _json(page.model_dump()["data"])
        return 0
    _table(
        [[j.id, j.status, j.model, _when(j.created_at), _when(j.finished_at)] for j in page.data],
        ["ID", "STATUS", "MODEL", "CREATED", "FINISHED"],
    )
    return 0


def cmd_get(client: openai.OpenAI, args: argparse.Namespace) -> int:
    _json(client.fine_tuning.jobs.retrieve(args.job))
    return 0


def cmd_follow(client: openai.OpenAI, args: argparse.Namespace) -> int:
    job = follow(client, args.job, interval=args.interval)
    evals = jobs.held_out(client, job.id)
    before, after = evals.get("before", {}), evals.get("after", {})
    if "pass@1" in after:
        shown = f"{before['pass@1']:.3f} -> " if "pass@1" in before else ""
        print(
            f"held-out pass@1: {shown}{after['pass@1']:.3f} ({after.get('problems')} problems)",
            file=sys.stderr,
        )
    best = jobs.best_checkpoint(client, job.id)
    if best is not None:
        score = (best.metrics.model_extra or {}).get("full_valid_pass@1") if best.metrics else None
        print(
            f"best checkpoint: step {best.step_number} (round {(best.model_extra or {}).get('round')}), held-out "
            f"pass@1 {_score(score)}: `rapid jobs download {job.id} --best`",
            file=sys.stderr,
        )
    if job.status != "succeeded":
        why = f": {job.error.message}" if job.error and job.error.message else ""
        print(f"job {job.id} {job.status}{why}", file=sys.stderr)
        return 1
    print(f"job {job.id} succeeded; `rapid jobs download {job.id}` fetches the adapter", file=sys.stderr)
    return 0


def _action(name: str):
    def run(client: openai.OpenAI, args: argparse.Namespace) -> int:
        job = getattr(client.fine_tuning.jobs, name)(args.job)
        print(f"{job.id}: {job.status}")
        return 0

    return run


def cmd_events(client: openai.OpenAI, args: argparse.Namespace) -> int:
    page = client.fine_tuning.jobs.list_events(args.job, limit=args.limit)
    for e in reversed(page.data):
        print(f"{_when(e.created_at)}  {e.level:<5}  {e.message}")
    return 0


def cmd_checkpoints(client: openai.OpenAI, args: argparse.Namespace) -> int:
    page = client.fine_tuning.jobs.checkpoints.list(args.job, limit=args.limit)
    rows = []
    for c in page.data:
        extra = c.model_extra or {}
        scores = (c.metrics.model_extra or {}) if c.metrics else {}
        reward, held_out = scores.get("reward_mean"), scores.get("full_valid_pass@1")
        rows.append(
            [
                c.id,
                "final" if extra.get("final") else extra.get("round", "-"),
                c.step_number,
                _score(reward),
                _score(held_out),
                "best" if extra.get("best") else "",
                _when(c.created_at),
            ]
        )
    _table(rows, ["ID", "ROUND", "STEP", "REWARD", "PASS@1", "BEST", "CREATED"])  # PASS@1: held-out
    return 0


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def cmd_download(client: openai.OpenAI, args: argparse.Namespace) -> int:
    if args.best and args.checkpoint:
        raise ClientError("--best and --checkpoint name different checkpoints; give one")
    checkpoint = jobs.BEST if args.best else args.checkpoint
    default = f"{args.job}-best-adapter" if args.best else f"{args.job}-adapter"
    dest = jobs.download_adapter(client, args.job, args.output or default, checkpoint)
    print(dest)
    print("load it with peft.PeftModel.from_pretrained(base_model, that directory)", file=sys.stderr)
    return 0


def cmd_upload(client: openai.OpenAI, args: argparse.Namespace) -> int:
    uploaded = jobs.upload(client, args.path)
    print(uploaded.id)
    lines = (uploaded.model_extra or {}).get("lines")
    print(f"uploaded {args.path} as {uploaded.id} ({uploaded.bytes} bytes, {lines} records)", file=sys.stderr)
    return 0


def cmd_files(client: openai.OpenAI, args: argparse.Namespace) -> int:
    page = client.files.list()
    _table(
        [
            [f.id, f.filename, f.bytes, (f.model_extra or {}).get("lines", "-"), _when(f.created_at)]
            for f in page.data
        ],
        ["ID", "FILENAME", "BYTES", "RECORDS", "CREATED"],
    )
    return 0


# --- parser --------------------------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        help="server URL (default: $RAPID_BASE_URL, $OPENAI_BASE_URL, else http://127.0.0.1:8000/v1)",
    )
    parser.add_argument("--api-key", help="API key (default: $RAPID_API_KEY, else $OPENAI_API_KEY)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rapid",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{jobs,files}")

    jobs_parser = groups.add_parser(
        "jobs", help="fine-tuning jobs", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = jobs_parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, job: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if job:
            p.add_argument("job", help="job id (ftjob-...)")
        _connection_flags(p)
        p.set_defaults(func=func)
        return p

    create = command("create", cmd_create, "create a reinforcement fine-tuning job", job=False)
    create.add_argument("--training-file", "-t", required=True, help="JSONL path (uploaded first) or file id")
    create.add_argument("--validation-file", "-v", help="held-out JSONL path or file id")
    create.add_argument(
        "--grader",
        "-g",
        required=True,
        help="grader: a .json / .yaml file, inline JSON, or a short form: "
        "numeric:{{item.answer}}, exact:REF, math:REF, python:grader.py",
    )
    create.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter, e.g. --hp rounds=12 --hp learning_rate=3e-4 (repeatable)",
    )
    create.add_argument(
        "--hyperparameters", metavar="FILE", help="JSON / YAML file of hyperparameters (--hp wins)"
    )
    create.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"base model (default: {DEFAULT_MODEL})")
    create.add_argument("--seed", type=int, help="job seed (default: the server picks one)")
    create.add_argument("--suffix", help="a name for the fine-tuned model")
    create.add_argument("--follow", "-f", action="store_true", help="follow the job after creating it")
    create.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")

    pf = command(
        "preflight",
        cmd_preflight,
        "dry-run a job body: sample a few prompts x G with the base model on "
        "a worker, grade them, and report the signal, grader health, lengths and an ETA; exit 1 "
        "unless it succeeds",
        job=False,
    )
    pf.add_argument("--training-file", "-t", required=True, help="JSONL path (uploaded first) or file id")
    pf.add_argument("--grader", "-g", required=True, help="grader, as for `rapid jobs create`")
    pf.add_argument(
        "--hp", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter (repeatable)"
    )
    pf.add_argument(
        "--hyperparameters", metavar="FILE", help="JSON / YAML file of hyperparameters (--hp wins)"
    )
    pf.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"base model (default: {DEFAULT_MODEL})")
    pf.add_argument("--seed", type=int, help="job seed: which prompts come first")
    pf.add_argument(
        "--prompts", type=int, help="prompts to sample, each group_size times (server default 8, max 64)"
    )
    pf.add_argument(
        "--timeout", type=int, help="seconds the pre-flight may take (server default 300, max 600)"
    )
    pf.add_argument("--json", action="store_true", help="print the pre-flight object as JSON")
    pf.add_argument("--interval", type=float, default=1.0, help="seconds between polls")

    ls = command("list", cmd_list, "list the project's jobs, newest first", job=False)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true", help="print the job objects as JSON")
    command("get", cmd_get, "print one job as JSON")
    fw = command(
        "follow", cmd_follow, "show a live progress bar until the job ends; exit 1 unless it succeeds"
    )
    fw.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    for name in ("cancel", "pause", "resume"):
        command(name, _action(name), f"{name} a job")
    ev = command("events", cmd_events, "print the job's events, oldest first")
    ev.add_argument("--limit", type=int, default=100)
    ck = command("checkpoints", cmd_checkpoints, "list the job's checkpoints")
    ck.add_argument("--limit", type=int, default=100)
    dl = command("download", cmd_download, "download and unpack the job's PEFT adapter")
    dl.add_argument("--output", "-o", help="directory to unpack into (default: ./JOB-adapter)")
    dl.add_argument("--checkpoint", help="a checkpoint id (default: the final adapter, else the newest)")
    dl.add_argument(
        "--best",
        action="store_true",
        help="the checkpoint with the best held-out pass@1 of the "
        "evaluations every eval_interval steps (`rapid jobs checkpoints` marks it)",
    )

    files_parser = groups.add_parser("files", help="training and validation files")
    fsub = files_parser.add_subparsers(dest="command", required=True)
    up = fsub.add_parser("upload", help="upload a JSONL file (purpose fine-tune); prints its id")
    up.add_argument("path")
    _connection_flags(up)
    up.set_defaults(func=cmd_upload)
    fl = fsub.add_parser("list", help="list the project's files")
    _connection_flags(fl)
    fl.set_defaults(func=cmd_files)
    return parser


def _api_message(err: openai.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    detail = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    message = detail.get("message") or err.message
    param = f" (param {detail['param']})" if detail.get("param") else ""
    return f"{message}{param} [HTTP {err.status_code}]"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = f"rapid {args.group} {args.command}"
    try:
        client = connect(args.base_url, args.api_key)
        return args.func(client, args)
    except ClientError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except openai.APIStatusError as err:
        print(f"{name}: error: {_api_message(err)}", file=sys.stderr)
        return 1
    except openai.APIConnectionError:
        print(
            f"{name}: error: cannot reach the server at {client.base_url}; is `rapid serve` running "
            "(or RAPID_BASE_URL set)?",
            file=sys.stderr,
        )
        return 1
    except OSError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted (a job keeps running on the server)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
