"""``rapid train`` and ``rapid eval`` (the service adds ``serve`` and ``keys``: see rapid_cli.py).

Every TrainConfig and RunPaths field is a flag (``--learning-rate 1e-4``, ``--output-dir runs/x``);
``--config FILE`` (YAML, JSON or TOML) sets many at once and flags override it. Bad values fail
before any model loads, naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel

from rapid_core.config import RunPaths, TrainConfig, load_config_file, make_config, make_paths
from rapid_core.errors import ConfigError, RapidError

FLAG_MODELS: tuple[type[BaseModel], ...] = (TrainConfig, RunPaths)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_value(annotation: Any, text: str) -> Any:
    """Turn a flag's text into the field's type; JSON for lists and mappings, 'null' for None."""
    if text.lower() in ("null", "none"):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and args:
        for arg in args:
            try:
                return _parse_value(arg, text)
            except (ValueError, json.JSONDecodeError):
                continue
        return text
    if origin is typing.Literal:
        return text
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if annotation in (int, float):
        return annotation(text)
    if origin in (list, dict) or annotation in (list, dict):
        return json.loads(text)
    return text


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML, JSON or TOML file of options (flags override it)")
    titles = {TrainConfig: "training options (RAPID.md)", RunPaths: "paths"}
    for model in FLAG_MODELS:
        group = parser.add_argument_group(titles[model])
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            group.add_argument(
                _flag(name),
                dest=name,
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=f"{field.description} (default: {json.dumps(default, default=str)})",
            )


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, RunPaths]:
    """The run's config and paths from ``--config`` and the flags (flags win)."""
    values: dict[str, Any] = load_config_file(args.config) if getattr(args, "config", None) else {}
    for model in FLAG_MODELS:
        for name, field in model.model_fields.items():
            if name in vars(args):
                raw = vars(args)[name]
                try:
                    values[name] = _parse_value(field.annotation, raw)
                except (ValueError, json.JSONDecodeError):
                    raise ConfigError(f"cannot read {raw!r} as {field.annotation}", name) from None
    path_values = {k: values.pop(k) for k in list(values) if k in RunPaths.model_fields}
    return make_config(**values), make_paths(**path_values)


def cmd_train(args: argparse.Namespace) -> int:
    cfg, paths = config_from_args(args)
    from rapid_core.trainer import train

    print(
        f"RAPID {cfg.algorithm}: model {cfg.model}, task {cfg.task}, B={cfg.inference_batch} "
        f"(P={cfg.round_prompts} x G={cfg.group_size}), m={cfg.mini_batch_size}, U={cfg.batch_ratio}"
        f"{f' (first round; auto within {cfg.batch_ratio_min}..{cfg.batch_ratio_max})' if cfg.auto_batch else ''}; "
        f"output {paths.output_dir}",
        file=sys.stderr,
    )
    summary = train(cfg, paths, progress=not args.quiet)
    print_summary(summary)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    print(
        f"\nTrained {summary['rounds']} rounds, {summary['steps']} optimizer steps, {summary['samples']} "
        f"samples in {summary['train_seconds']:.0f} s. Adapter: {summary['adapter_dir']}"
    )
    if after:
        for key in [k for k in after if k.startswith("pass@")]:
            b = before.get(key)
            shown = f"{b:.3f} -> " if b is not None else ""
            print(f"held-out {key}: {shown}{after[key]:.3f}  ({after['problems']} problems)")
    if best := summary.get("best"):
        print(
            f"best checkpoint: step {best['step']} (round {best['round']}), held-out pass@1 "
            f"{best['pass@1']:.3f}. Adapter: {best['adapter_dir']}"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    cfg, paths = config_from_args(args)
    from rapid_core.engines import make_engine
    from rapid_core.evaluation import evaluate
    from rapid_core.graders import build_grader
    from rapid_core.models import load_policy
    from rapid_core.tasks import load_task

    task = load_task(cfg, paths)
    grader = build_grader(task.grader)
    policy = load_policy(cfg, adapter=args.adapter, trainable=False)
    engine = make_engine(cfg, policy)  # the trainer's path: --engine vllm works here too
    import torch

    torch.manual_seed(cfg.seed)
    result = evaluate(
        engine,
        policy.tokenizer,
        grader,
        task.eval[: cfg.eval_problems],
        k=cfg.eval_k,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
    )
    print(json.dumps({"model": cfg.model, "adapter": args.adapter, **result.to_dict()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rapid", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="fine-tune a model with RAPID (or a baseline)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="held-out greedy pass@1 and sampled pass@k of a model (+ adapter)")
    ev.add_argument("--adapter", help="PEFT adapter directory to apply")
    add_config_flags(ev)
    ev.set_defaults(func=cmd_eval)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RapidError as err:
        print(f"rapid {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
