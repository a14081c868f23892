"""The one typed configuration of a training run, validated before any model loads.

Every option of ``../shared/RAPID.md`` lives in ``TrainConfig`` with its default. The CLI, config
files and the service's job hyperparameters all build it once; a bad value raises ``ConfigError``
naming the field and what is allowed. Where a run reads and writes (``RunPaths``) is not part of it:
the service validates a job's config before any path exists, and the worker adds the paths.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rapid_core.errors import ConfigError

Algorithm = Literal["rapid", "grpo", "pg"]
REPORT_TO = ("none", "all", "tensorboard", "wandb")  # rapid_core/report_to.py registers the last two


class TrainConfig(BaseModel):
    """A RAPID (or baseline) training run. Field descriptions double as ``rapid train --help``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- model ---
    model: str = Field(
        "smollm2-135m-instruct",
        description="Model: built-in alias, Hugging Face id, local directory, or path to a .gguf file",
    )
    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapter or full fine-tuning")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="LoRA dropout; only 0: the training pass must be the sampler's policy"
    )
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="LoRA target modules, or all-linear"
    )
    dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Compute dtype; auto = bf16 on a CUDA card that has it, and on a CPU with bf16 "
        "instructions where a bf16 matmul measures >= 1.25x float32's rate (AMX, Zen 4/5)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device; auto = cuda if present")
    engine: Literal["hf", "vllm"] = Field("hf", description="Generation engine")
    decode: Literal["auto", "dynamic", "static", "compiled", "cuda_graph"] = Field(
        "auto",
        description="hf engine decode loop: dynamic (growing cache, finished rows dropped), static "
        "(preallocated cache), compiled (static + torch.compile), cuda_graph (static, each step one captured "
        "CUDA graph); auto = for Llama/Qwen2/Qwen3 models cuda_graph on CUDA and static on a CPU, else dynamic",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads (0 = torch's default). On a CPU shared with other "
        "jobs 1 can be much faster: a descheduled thread stalls every OpenMP barrier",
    )
    gen_micro_batch: int = Field(64, ge=1, description="Largest generation batch run at once (memory)")
    train_micro_batch: int = Field(
        0, ge=0, description="Split each mini-batch into forward/backward chunks of this size (0 = whole)"
    )
    train_prompt_pass: Literal["auto", "shared", "per_row"] = Field(
        "auto",
        description="Training forward: shared (each distinct prompt runs once and its KV cache is copied to "
        "its samples: fewest FLOPs), per_row (prompt and completion as one sequence per sample: about half "
        "the kernel launches); auto = shared on a CPU, per_row on CUDA",
    )

    # --- task and reward ---
    task: str = Field(
        "arithmetic",
        description="Task: arithmetic, jsonl (records file), or a dataset: gsm8k, math, math500, mbpp, "
        "mbpp_sanitized, mbpp_plus, humaneval, minif2f",
    )
    task_options: dict[str, Any] = Field(
        default_factory=dict, description="Task options, e.g. arithmetic digits / operators"
    )
    grader: dict[str, Any] | None = Field(None, description="Grader spec; default: the task's own grader")
    system_prompt: str | None = Field(None, description="Override the task's system prompt")

    # --- algorithm (RAPID.md) ---
    algorithm: Algorithm = Field("rapid", description="rapid (off-policy, ratio U), grpo or pg (ratio 1)")
    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt")
    prompts_per_round: int = Field(
        16,
        ge=1,
        description="P: prompts per inference round for rapid (B = P * G); baselines use m / G. "
        "With batch_ratio_control=auto it sets the first round's U = P * G / m",
    )
    batch_ratio_control: Literal["auto", "fixed"] = Field(
        "auto",
        description="rapid: auto picks each round's U = B / m from the last rounds' generation and "
        "training time and their late steps' ESS / clip fraction / approx KL (rapid_core/batch_ratio.py); "
        "fixed keeps U = prompts_per_round * group_size / mini_batch_size",
    )
    batch_ratio_min: int = Field(1, ge=1, description="Smallest U batch_ratio_control=auto may pick")
    batch_ratio_max: int = Field(
        16, ge=1, description="Largest U batch_ratio_control=auto may pick (bounds B = U * m, hence memory)"
    )
    batch_ratio_min_gain: float = Field(
        0.03,
        ge=0,
        lt=1,
        description="Share of a round's time per sample that doubling B must save for auto to grow U; a "
        "grown U that saves less over half its batch shrinks back. 0: grow on health alone",
    )
    mini_batch_size: int = Field(32, ge=1, description="m: samples per optimizer step")
    is_level: Literal["token", "sequence"] = Field(
        "token", description="Importance weight per token or sequence"
    )
    is_clip: float | None = Field(2.0, gt=0, description="Truncation c of importance weights (null = none)")
    norm: Literal["token_mean", "seq_mean", "constant"] = Field("token_mean", description="Loss normaliser")
    kl_beta: float = Field(0.0, ge=0, description="KL(pi || ref) penalty weight; 0 loads no reference")
    adv_scale: Literal["none", "std"] = Field("none", description="Divide group advantages by std + 1e-6")
    adv_baseline: Literal["mean", "loo"] = Field("mean", description="Group mean or leave-one-out baseline")
    drop_zero_std: bool | None = Field(
        None,
        description="Leave groups whose rewards are all equal out of training: their advantage is 0, "
        "so they add no policy gradient, only training time. Default (null): on for rapid without a "
        "KL penalty (docs/benchmarks.md: 0.66x the training time at equal or better accuracy), off "
        "for grpo and pg, which run as they do elsewhere",
    )
    minibatch_grouping: Literal["samples", "groups"] = Field(
        "samples",
        description="Shuffle single samples (RAPID.md) or whole prompt groups into "
        "mini-batches; groups lets each step run a prompt once for its G samples (~2x faster steps)",
    )
    ppo_epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the grpo objective")
    overlong_buffer: int = Field(
        0,
        ge=0,
        description="Soft overlong penalty (DAPO): a completion longer than max_new_tokens - N tokens "
        "loses reward in proportion to the excess, 1 in all at max_new_tokens (a cut completion); "
        "added to the grader's score before the group advantages. 0 = off",
    )
    mask_truncated: bool = Field(
        False,
        description="Leave completions cut at max_new_tokens out of the loss (DAPO's overlong "
        "filtering, TRL's mask_truncated_completions); they still count in their group's baseline",
    )

    # --- optimisation ---
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm (null = none)")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warmup steps")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="Learning rate after warmup: constant, or decayed to 0 over the planned run "
        "(linear or cosine, by rounds, samples or seconds of time_budget_s done, whichever ends it first)",
    )

    # --- sampling ---
    temperature: float = Field(1.0, gt=0, le=5.0, description="Sampling temperature T for rollouts")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="Longest completion")

    # --- stopping and checkpoints ---
    rounds: int | None = Field(20, ge=1, description="Stop after this many inference rounds")
    max_samples: int | None = Field(None, ge=1, description="Stop after this many sampled completions")
    time_budget_s: float | None = Field(None, gt=0, description="Stop at the first round boundary past this")
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N rounds (always at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk")

    # --- evaluation ---
    eval_problems: int = Field(
        100, ge=0, description="Held-out problems evaluated before and after (0 = skip)"
    )
    eval_k: int = Field(4, ge=1, description="k of the sampled pass@k")
    eval_before: bool = Field(True, description="Evaluate the base model before training")
    eval_interval: int | None = Field(
        None,
        ge=1,
        description="Held-out evaluation every N optimizer steps: at the first round boundary "
        "at or after each multiple of N, and at the end, each with its checkpoint; the best (greedy pass@1) "
        "is kept and named in best.json and the summary (rapid_core/periodic_eval.py)",
    )

    report_to: list[str] | str = Field(
        "none",
        description="Also log metrics to tensorboard (<output_dir>/tensorboard) and/or wandb, as TRL "
        "names them: one name, a list, all or none (rapid_core/report_to.py)",
    )
    seed: int = Field(0, description="Seed of data order, sampling and initialisation")

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_reporters(cls, value: Any) -> Any:
        value = "none" if value is None else value  # the CLI reads `--report-to none` as null
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        unknown = [n for n in names if n not in REPORT_TO]
        if unknown:
            raise ValueError(f"unknown {unknown[0]!r}; known: {', '.join(REPORT_TO)}")
        return value

    @model_validator(mode="after")
    def _check_shapes(self) -> TrainConfig:
        if self.mini_batch_size % self.group_size and self.algorithm != "rapid":
            raise RuleError(
                "mini_batch_size",
                f"must be a multiple of group_size ({self.group_size}) for {self.algorithm}, got "
                f"{self.mini_batch_size}: each round is one mini-batch of whole groups",
            )
        if self.algorithm == "rapid" and self.inference_batch % self.mini_batch_size:
            raise RuleError(
                "mini_batch_size",
                f"prompts_per_round * group_size ({self.inference_batch}) must be a multiple of "
                f"mini_batch_size ({self.mini_batch_size})",
            )
        if self.algorithm == "rapid" and self.batch_ratio_control == "auto":
            if self.batch_ratio_min > self.batch_ratio_max:
                raise RuleError("batch_ratio_min", f"must be <= batch_ratio_max ({self.batch_ratio_max})")
            if not self.batch_ratio_min <= self.batch_ratio <= self.batch_ratio_max:
                raise RuleError(
                    "batch_ratio_max",
                    f"the first round's U = prompts_per_round * group_size / mini_batch_size = "
                    f"{self.batch_ratio} must lie in [batch_ratio_min, batch_ratio_max] = "
                    f"[{self.batch_ratio_min}, {self.batch_ratio_max}] with batch_ratio_control=auto",
                )
        if self.minibatch_grouping == "groups" and self.mini_batch_size % self.group_size:
            raise RuleError("minibatch_grouping", "groups needs mini_batch_size a multiple of group_size")
        if self.overlong_buffer > self.max_new_tokens:
            raise RuleError(
                "overlong_buffer",
                f"must be <= max_new_tokens ({self.max_new_tokens}), got {self.overlong_buffer}",
            )
        if self.rounds is None and self.max_samples is None and self.time_budget_s is None:
            raise RuleError("rounds", "set at least one of rounds, max_samples, time_budget_s")
        if self.engine == "vllm" and self.finetune != "lora":
            raise RuleError("engine", "vllm needs finetune=lora (adapters are handed to vLLM each round)")
        if self.kl_beta > 0 and self.finetune != "lora":
            raise RuleError("kl_beta", "a KL reference needs finetune=lora (the base model, adapter off)")
        if self.lora_dropout > 0:
            # Dropout makes the training pass a different policy from the one that sampled, so the
            # importance weights at staleness 0 would not be 1 (RAPID.md).
            raise RuleError(
                "lora_dropout",
                "must be 0: the loss's log-probs must come from the same policy that sampled the "
                "completions, and dropout changes it",
            )
        if self.engine == "vllm" and self.lora_r > 512:  # vLLM's largest max_lora_rank
            raise RuleError("lora_r", f"engine vllm serves LoRA ranks up to 512, got {self.lora_r}")
        return self

    # --- derived terms (RAPID.md) ---
    @property
    def inference_batch(self) -> int:
        """B: samples generated per round (the first round's with batch_ratio_control=auto)."""
        return inference_batch(self.algorithm, self.prompts_per_round, self.group_size, self.mini_batch_size)

    @property
    def auto_batch(self) -> bool:
        """Whether the batch-ratio controller picks each round's B (rapid only: baselines use B = m)."""
        return self.algorithm == "rapid" and self.batch_ratio_control == "auto"

    @property
    def drops_zero_std(self) -> bool:
        """Whether all-equal groups are left out of training (``drop_zero_std``, or its default)."""
        if self.drop_zero_std is not None:
            return self.drop_zero_std
        return self.algorithm == "rapid" and self.kl_beta == 0  # a KL penalty still has a gradient there

    @property
    def round_prompts(self) -> int:
        return self.inference_batch // self.group_size

    @property
    def batch_ratio(self) -> int:
        """U = B / m: optimizer steps per round (the first round's with batch_ratio_control=auto)."""
        return self.inference_batch // self.mini_batch_size


class RunPaths(BaseModel):
    """Where a run reads its records and writes its outputs: chosen by whoever runs it (the CLI's
    flags, the worker's job directory), never part of the validated training config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_dir: Path = Field(Path("runs/latest"), description="Where the adapter, metrics and checkpoints go")
    data_path: str | None = Field(
        None, description="Records file: required for jsonl; for datasets, overrides the shared copy"
    )
    eval_path: str | None = Field(None, description="Held-out dataset path (default: the task's own split)")

    @property
    def metrics_file(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"


def inference_batch(algorithm: str, prompts_per_round: int, group_size: int, mini_batch_size: int) -> int:
    """B of RAPID.md: P * G for rapid; the baselines generate exactly one mini-batch (B = m)."""
    return prompts_per_round * group_size if algorithm == "rapid" else mini_batch_size


class RuleError(ValueError):
    """A rule across fields, raised inside validation; ``field`` is the one the message is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _flatten_errors(err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    rule = first.get("ctx", {}).get("error")
    if isinstance(rule, RuleError):
        return ConfigError(rule.message, rule.field)
    field = ".".join(str(p) for p in first["loc"]) or None
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown option"
    elif first["type"] == "literal_error":
        msg = f"{msg} (got {first.get('input')!r})"
    return ConfigError(msg, field)


def make_config(**values: Any) -> TrainConfig:
    """Build a config from plain values; raises ConfigError naming the first bad field."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise _flatten_errors(err) from None


def make_paths(**values: Any) -> RunPaths:
    """Build run paths from plain values; raises ConfigError naming the first bad field."""
    try:
        return RunPaths(**values)
    except ValidationError as err:
        raise _flatten_errors(err) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML config file into plain values (TrainConfig and RunPaths keys)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", "config")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"unsupported config format {p.suffix!r}; use .yaml, .json or .toml", "config")
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot parse {p}: {err}", "config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of option -> value", "config")
    return data
