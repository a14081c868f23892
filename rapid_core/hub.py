"""Models from the Hugging Face Hub: the shape of an id, the files a causal LM needs, the local cache
(under HF_HOME) and downloads that report their progress as short messages.

huggingface_hub's conventions hold: downloads are allowed unless HF_HUB_OFFLINE (or
TRANSFORMERS_OFFLINE) is set, HF_ENDPOINT picks the hub and HF_TOKEN authenticates. A snapshot
that is complete in the cache is used without any network call. huggingface_hub is imported
lazily; torch never is.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from rapid_core.errors import ModelError

# One part of "org/name" as the Hub accepts it (huggingface_hub's validate_repo_id): ASCII letters,
# digits, '_', '-' and '.', starting and ending with a letter, digit or '_', at most 96 characters.
_PART = re.compile(r"(?=.{1,96}$)\w(?:[\w.-]*\w)?", re.ASCII)
SHAPE_RULE = (
    "a Hugging Face id is 'org/name', each part at most 96 ASCII letters, digits, '-', '_' or '.', "
    "starting and ending with a letter, digit or '_', without '--' or '..'"
)
# Files a transformers causal LM reads besides its weights: config, generation config, tokenizer
# (tokenizer.json / vocab + merges / sentencepiece / tiktoken) and chat template.
_METADATA_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
_SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
_PYTORCH_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")

Progress = Callable[[str], None]


def looks_like_hub_id(name: str) -> bool:
    """Whether a name that is neither an alias nor a local path is meant as a hub id."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not name.endswith(".gguf")


def check_hub_id(name: str) -> None:
    """Refuse an id the Hub could not hold, without any network call."""
    org, _, repo = name.partition("/")
    valid = all(_PART.fullmatch(part) for part in (org, repo))
    if not valid or "--" in name or ".." in name or name.endswith(".git"):
        raise ModelError(f"model {name!r} is not a valid Hugging Face model id: {SHAPE_RULE}")


def model_files(paths: Iterable[str]) -> list[str]:
    """The files of a repo that loading it as a transformers causal LM needs: metadata and one weights
    format (safetensors when present, else PyTorch .bin); never ONNX, GGUF or subfolders."""
    top = sorted(p for p in paths if "/" not in p)
    standard = [
        p for p in top if _SAFETENSORS.fullmatch(p)
    ]  # not e.g. Mistral's consolidated.safetensors too
    safetensors = standard or [p for p in top if p.endswith(".safetensors")]
    weights = safetensors or [p for p in top if _PYTORCH_BIN.fullmatch(p)]
    if not weights:
        raise ModelError(
            "the repo has no transformers weights (model*.safetensors or pytorch_model*.bin) at its top level; "
            "for a GGUF file, download it and give its path as the model"
        )
    unused_index = "pytorch_model.bin.index.json" if safetensors else "model.safetensors.index.json"
    metadata = [p for p in top if p.endswith(_METADATA_SUFFIXES) and p != unused_index]
    return sorted(metadata + weights)


def _model_files_of(repo_id: str, paths: Iterable[str]) -> list[str]:
    try:
        return model_files(paths)
    except ModelError as err:
        raise ModelError(f"model {repo_id!r}: {err}") from None


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of the default branch when it holds every file ``model_files`` picks; no
    network call. A cache written without a file listing (e.g. by transformers) counts when it has a
    config and weights."""
    from huggingface_hub import get_cached_repo_tree, snapshot_download
    from huggingface_hub.errors import CachedRepoTreeNotFoundError, LocalEntryNotFoundError

    try:
        files = _model_files_of(repo_id, (f.path for f in get_cached_repo_tree(repo_id)))
    except CachedRepoTreeNotFoundError:
        files = None
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=files, local_files_only=True))
    except LocalEntryNotFoundError:  # also an incomplete snapshot
        return None
    has_weights = files is not None or any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    return path if (path / "config.json").is_file() and has_weights else None


def offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def download_snapshot(repo_id: str, progress: Progress | None = None) -> Path:
    """Download the files ``model_files`` picks into the cache (files already there are kept). With
    ``progress``, report start, throttled byte counts and the end as messages; without, show
    huggingface_hub's own progress bars."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    started = time.monotonic()
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
        sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
        files = _model_files_of(repo_id, sizes)
        total = sum(sizes[f] for f in files)
        bars = None
        if progress:
            progress(f"Downloading {repo_id}: {len(files)} files, {_mb(total, total)} MB")
            bars = _forwarding_bar(_ByteProgress(repo_id, total, progress))
        path = snapshot_download(repo_id, allow_patterns=files, tqdm_class=bars)
    except GatedRepoError:
        raise ModelError(
            f"model {repo_id!r} is gated on the Hugging Face Hub: accept its terms on the model's page and "
            "set HF_TOKEN to a token of that account"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model {repo_id!r} was not found on the Hugging Face Hub (a private repo needs HF_TOKEN)"
        ) from None
    except _network_errors() as err:
        raise ModelError(
            f"could not download model {repo_id!r} from {constants.ENDPOINT}: {type(err).__name__}: {err}"
        ) from err
    if progress:
        progress(f"Downloaded {repo_id} ({_mb(total, total)} MB) in {time.monotonic() - started:.0f} s")
    return Path(path)


def _network_errors() -> tuple[type[Exception], ...]:
    """What a download raises when the hub answers with an error, cannot be reached, or the disk fails."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        import httpx2 as httpx  # huggingface_hub >= 2
    except ImportError:
        import httpx
    return HfHubHTTPError, httpx.HTTPError, OSError


def _mb(n: int, total: int) -> str:
    return f"{n / 1e6:.1f}" if total < 10e6 else f"{n / 1e6:.0f}"


class _ByteProgress:
    """Bytes downloaded so far -> a message at every further 10 % or every 5 s, whichever comes first.
    Download threads call ``update`` concurrently."""

    def __init__(self, repo_id: str, total: int, report: Progress, every_s: float = 5.0):
        self.repo_id, self.total, self.report, self.every_s = repo_id, total, report, every_s
        self.done = 0
        self.next_tenth = 1
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def update(self, done: int) -> None:
        with self.lock:
            if done <= self.done:
                return
            self.done = done
            tenths = int(10 * done / self.total) if self.total else 0
            now = time.monotonic()
            if done < self.total and (tenths >= self.next_tenth or now - self.last >= self.every_s):
                total = _mb(self.total, self.total)
                self.report(f"Downloading {self.repo_id}: {_mb(done, self.total)} / {total} MB")
                self.next_tenth, self.last = tenths + 1, now


class _Discard(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def _forwarding_bar(bytes_seen: _ByteProgress) -> type[tqdm]:
    """A tqdm class for snapshot_download that draws nothing and forwards byte counts. Its byte bars
    (unit "B") all count the same download (received / written), so the largest count is the one."""

    class ForwardingBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "file": _Discard(), "disable": False})

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B":
                bytes_seen.update(int(self.n))
            return shown

    return ForwardingBar
