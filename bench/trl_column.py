"""The optional TRL column of ``compare``: per-sample wall time of TRL's GRPOTrainer (trl 1.x) with
the same model, LoRA settings, G, mini-batch, max_new_tokens, temperature and learning rate.

One GRPOTrainer step generates one mini-batch (m completions, m / G prompts x G) and takes one
optimizer step, so its per-sample time is step time / m. The first step is timed apart (warm-up).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from typing import Any

import torch


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None


def trl_per_sample(args) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rapid_core.config import RunPaths
    from rapid_core.graders import build_grader
    from rapid_core.models import bf16_supported, dense_dir, load_tokenizer, resolve_model
    from rapid_core.tasks import load_task

    _fingerprints_without_dill()
    cfg_probe = _probe_config(args)
    task = load_task(cfg_probe, RunPaths())
    grader = build_grader(task.grader)
    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(dense_dir(source), dtype=torch.float32)
    n_prompts = (args.trl_steps * args.mini_batch) // args.group_size
    data = Dataset.from_list(
        [{"prompt": r["messages"], "idx": i} for i, r in enumerate(task.train[:n_prompts])]
    )

    def reward(completions, idx, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [g.score for g in grader.grade_batch([task.train[i] for i in idx], texts)]

    cuda = torch.cuda.is_available() and args.device != "cpu"
    bf16 = args.dtype == "bf16" or (
        args.dtype == "auto" and bf16_supported(torch.device("cuda" if cuda else "cpu"))
    )

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.mini_batch,
            num_generations=args.group_size,
            max_completion_length=args.max_new_tokens,
            temperature=args.temperature,
            top_p=1.0,
            top_k=0,
            learning_rate=args.lr,
            max_steps=args.trl_steps,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            bf16=bf16,
            use_cpu=not cuda,
            beta=0.0,
            seed=args.seed,
            dataloader_num_workers=0,
        )
        lora = LoraConfig(
            r=16, lora_alpha=32.0, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora if args.finetune == "lora" else None,
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    steps = [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]
    timed = steps[1:] or steps
    per_step = statistics.mean(timed)
    return {
        "trl_version": trl.__version__,
        "steps": len(steps),
        "samples": len(steps) * args.mini_batch,
        "step_s": steps,
        "wall_s": wall,
        "per_sample_s": per_step / args.mini_batch,
        "first_step_s": steps[0] if steps else None,
        "bf16": bf16,
    }


def _fingerprints_without_dill() -> None:
    """Dataset fingerprints only name cache files; some dill/pyarrow pairs cannot pickle pyarrow's
    types and make every Dataset constructor fail. A random fingerprint is enough here (no cache)."""
    import uuid

    from datasets import Dataset, fingerprint

    try:
        Dataset.from_list([{"a": 1}])
    except Exception:  # noqa: BLE001 - any pickling failure of this kind
        fingerprint.Hasher.hash = classmethod(lambda cls, value: uuid.uuid4().hex)


def _probe_config(args):
    from rapid_core.config import make_config

    return make_config(model=args.model, task=args.task, eval_problems=0, rounds=1)
