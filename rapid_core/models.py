"""Model resolution and loading: aliases, local directories, GGUF files, hub ids; LoRA or full
fine-tuning; the compute dtype (bf16 where it is faster, trainable weights in float32)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rapid_core.config import TrainConfig
from rapid_core.cpu_attention import use_cpu_attention
from rapid_core.errors import ModelError
from rapid_core.model_source import (  # noqa: F401  (re-exported for callers of the loader)
    ALIASES,
    SMOLLM2_ALIAS,
    TINY_ALIAS,
    ModelSource,
    _smollm2_gguf,
    cache_dir,
    download_model,
    resolve_model,
)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelError("device cuda asked for, but no CUDA device is visible")
        return torch.device("cuda")
    return torch.device("cpu")


# bf16 changes the numerics, so a CPU takes it only where it clearly pays (AMX and Zen 4/5 measured
# several times fp32's matmul rate).
BF16_MIN_SPEEDUP = 1.25


def bf16_supported(device: torch.device) -> bool:
    """Whether ``dtype: auto`` computes in bf16: on CUDA where the card has it; on a CPU where it has
    bf16 instructions and a bf16 matmul measures faster than float32 here."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "amx_bf16" not in flags and "avx512_bf16" not in flags:
        return False
    return cpu_bf16_speedup(torch.get_num_threads()) >= BF16_MIN_SPEEDUP


@functools.cache
def cpu_bf16_speedup(threads: int) -> float:
    """bf16 / float32 matmul rate on this CPU with ``threads`` torch threads, at a 135M model's layer
    shape (~0.1 s). The flag alone misleads: a Xeon VM with avx512_bf16 and its AMX hidden ran bf16
    at 0.56x float32, for generation and training alike (docs/perf-notes.md, section 12)."""
    gen = torch.Generator().manual_seed(0)  # not the global generator: a run's seeded stream stays
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.rand(256, 576, generator=gen).to(dtype)
        b = torch.rand(576, 1536, generator=gen).to(dtype)
        for _ in range(3):
            a @ b
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < 0.04:
            a @ b
            reps += 1
        rates.append(reps / (time.perf_counter() - start))
    return rates[1] / rates[0]


def pick_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "bf16" or (cfg.dtype == "auto" and bf16_supported(device)):
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast for the matmuls; a no-op in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    if source.name == TINY_ALIAS:
        ensure_tiny_model()
    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(source.path, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def dense_dir(source: ModelSource) -> str:
    """A safetensors directory for the model. GGUF files are dequantized once into the cache: the
    GGUF-loaded model refuses save_pretrained and costs ~15 s to dequantize every load."""
    if source.name == TINY_ALIAS:
        return ensure_tiny_model()
    if not source.gguf_file:
        return source.path
    from transformers import AutoConfig, AutoModelForCausalLM

    target = cache_dir() / "dense" / Path(source.gguf_file).stem
    if (target / "config.json").is_file():
        return str(target)
    # from_config draws random initial weights from the global generator, which the run has already
    # seeded: without the fork, the run that fills a cold cache samples other completions than every
    # later run with the same seed (measured: round 1's accuracy 0.141 instead of 0.156).
    with torch.random.fork_rng():
        quantized = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file)
        config = AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        dense = AutoModelForCausalLM.from_config(config)
        dense.load_state_dict(quantized.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    dense.save_pretrained(tmp)
    load_tokenizer(source).save_pretrained(tmp)
    return publish_model_dir(tmp, target)


def ensure_tiny_model() -> str:
    """A tiny random Llama with SmolLM2's tokenizer, built once (seeded) for tests."""
    target = cache_dir() / TINY_ALIAS
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return publish_model_dir(tmp, target)


def publish_model_dir(tmp: Path, target: Path) -> str:
    """Move a freshly written model directory into the cache in one rename. Workers started together
    on a fresh cache each build their own copy; the first rename wins and the others' copies, being
    the same model, are discarded instead of failing the job."""
    try:
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


@dataclass
class Policy:
    """The model being trained, its tokenizer, where it runs and in which compute dtype."""

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    lora: bool

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        if missing:
            raise ModelError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def reference_context(self):
        """The KL reference: the base model with the adapter disabled."""
        if not self.lora:
            raise ModelError("a KL reference with full fine-tuning is not supported; use finetune=lora")
        return self.model.disable_adapter()

    def lm_parts(self):
        """(decoder, lm_head) of the causal LM, under any PEFT wrapper."""
        base = self.model.get_base_model() if self.lora else self.model
        return base.model, base.lm_head


def load_policy(cfg: TrainConfig, adapter: str | None = None, trainable: bool = True) -> Policy:
    """Load the model for training (or, with trainable=False, for evaluation only)."""
    from transformers import AutoModelForCausalLM

    source = download_model(cfg.model)  # a hub id not yet cached downloads here, with progress bars
    device = pick_device(cfg)
    dtype = pick_dtype(cfg, device)
    tokenizer = load_tokenizer(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(dense_dir(source), dtype=torch.float32)
    except OSError as err:
        raise ModelError(f"cannot load model {cfg.model!r}: {err}") from None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device.type == "cpu":
        use_cpu_attention(model)  # float32 and the kernel's own GQA: several times faster (cpu_attention.py)
    lora = cfg.finetune == "lora"
    if lora:
        # Frozen base weights live in the compute dtype (no per-step casts); LoRA weights stay fp32.
        model.to(dtype)
        model = _wrap_lora(model, cfg, adapter, trainable)
    elif adapter:
        raise ModelError("an adapter needs finetune=lora")
    model.to(device)
    model.train(False)
    for p in model.parameters():
        if not trainable:
            p.requires_grad_(False)
        elif p.requires_grad:
            p.data = p.data.float()
    return Policy(model, tokenizer, device, dtype, lora)


def _wrap_lora(model, cfg: TrainConfig, adapter: str | None, trainable: bool):
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelError(f"adapter directory {adapter!r} has no adapter_config.json")
        return PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    targets = cfg.lora_target_modules
    lora_cfg = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return get_peft_model(model, lora_cfg)


def save_adapter(policy: Policy, path: Path) -> None:
    """The user-facing artifact: a PEFT adapter directory (or a full model when not LoRA)."""
    policy.model.save_pretrained(path)
    if not policy.lora:
        policy.tokenizer.save_pretrained(path)


def prompt_token_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Apply the model's chat template the way it expects, ending with the assistant turn opener."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    text = "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text)["input_ids"]
