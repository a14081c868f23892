"""Hugging Face ids: the shape is checked without any network call; the first use downloads the files a
causal LM needs into HF_HOME with progress messages; a complete cached snapshot is reused without a
single request; offline, unknown, gated and unreachable are ModelErrors naming the model. Against a
local fake Hub over real HTTP, in fresh processes (huggingface_hub reads HF_* variables at import)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rapid_core.errors import ModelError
from rapid_core.hub import _ByteProgress, model_files
from rapid_core.model_source import check_model_name
from tests.conftest import REPO
from tests.fake_hub import FakeHub

REPO_ID = "fake-org/tiny-llama"
# What a real repo also holds and a causal LM does not need: none of it may be downloaded.
DECOYS = {
    "pytorch_model.bin": b"\0" * 2_000_000,
    "onnx/model.onnx": b"\0" * 100,
    "model-q4.gguf": b"\0" * 100,
    "README.md": b"# tiny",
    ".gitattributes": b"*.safetensors filter=lfs",
}
USE = """
import json, sys
from rapid_core.errors import ModelError
from rapid_core.model_source import download_model
messages = []
try:
    source = download_model(sys.argv[1], progress=messages.append)
except ModelError as err:
    print(json.dumps({"messages": messages, "error": str(err)}))
else:
    print(json.dumps({"messages": messages, "path": source.path}))
"""


@pytest.fixture
def fake_hub(tiny_model):
    from rapid_core.models import ensure_tiny_model

    hub = FakeHub()
    hub.add_directory(REPO_ID, Path(ensure_tiny_model()), DECOYS)
    hub.add_repo("fake-org/gated", {"config.json": b"{}", "model.safetensors": b"\0" * 16}, gated=True)
    hub.url = hub.start()
    yield hub
    hub.stop()


def tiny_files() -> list[str]:
    from rapid_core.models import ensure_tiny_model

    return sorted(p.name for p in Path(ensure_tiny_model()).iterdir())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use(name: str, hf_home: Path, endpoint: str, **env: str) -> dict:
    """download_model(name) in a fresh process; a traceback (anything but a ModelError) fails the test."""
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environ |= {"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "PYTHONPATH": str(REPO), **env}
    done = subprocess.run(
        [sys.executable, "-c", USE, name], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name", ["Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B", "a/b", "org_x/m.v1", "o/" + "n" * 96]
)
def test_a_well_shaped_hub_id_passes_the_check_without_being_cached(name):
    check_model_name(name)  # nothing is cached and nothing is downloaded: the worker does that


@pytest.mark.parametrize(
    "name",
    [
        "Qwen/Qwen 2.5",
        "org/-name",
        "org/name-",
        "org/.name",
        "org--x/name",
        "org/na..me",
        "org/name.git",
        "o/" + "n" * 97,
        "org/naïve",
        "org/",
    ],
)
def test_a_badly_shaped_hub_id_is_refused_naming_it(name):
    with pytest.raises(ModelError, match="not a valid Hugging Face model id") as err:
        check_model_name(name)
    assert repr(name) in str(err.value)


def test_names_that_are_no_hub_id_or_alias_or_path_are_unknown():
    for name in ("no-such-model", "a/b/c", "./missing-dir"):
        with pytest.raises(ModelError, match="unknown model"):
            check_model_name(name)


def test_model_files_take_one_weights_format_and_the_tokenizer():
    qwen = [
        ".gitattributes",
        "LICENSE",
        "README.md",
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert model_files(qwen) == [
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    mistral = [
        "config.json",
        "consolidated.safetensors",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tokenizer.model",
        "original/consolidated.00.pth",
        "onnx/model.onnx",
        "chat_template.jinja",
    ]
    assert model_files(mistral) == [
        "chat_template.jinja",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.model",
    ]
    assert model_files(["config.json", "pytorch_model.bin", "tokenizer.json"]) == [
        "config.json",
        "pytorch_model.bin",
        "tokenizer.json",
    ]
    with pytest.raises(ModelError, match="GGUF"):
        model_files(["config.json", "model-q4_k_m.gguf", "onnx/model.onnx"])


def test_byte_progress_reports_each_tenth_once_and_not_the_end():
    messages: list[str] = []
    progress = _ByteProgress("o/m", 50_000_000, messages.append, every_s=3600)
    for done in range(0, 50_000_001, 1_000_000):
        progress.update(done)
    progress.update(3)  # an older count from another thread changes nothing
    assert messages == [f"Downloading o/m: {mb} / 50 MB" for mb in range(5, 50, 5)]


def test_first_use_downloads_once_then_the_cache_is_used_without_any_request(fake_hub, tmp_path):
    first = use(REPO_ID, tmp_path / "hf", fake_hub.url)
    assert "error" not in first, first
    assert sorted(fake_hub.downloads()) == tiny_files()  # no .bin, ONNX, GGUF, README or .gitattributes
    messages = first["messages"]
    assert messages[0] == f"Downloading {REPO_ID}: {len(tiny_files())} files, 16 MB"
    assert re.fullmatch(rf"Downloaded {REPO_ID} \(16 MB\) in \d+ s", messages[-1])
    counts = [int(re.fullmatch(rf"Downloading {REPO_ID}: (\d+) / 16 MB", m)[1]) for m in messages[1:-1]]
    assert counts and counts == sorted(counts) and counts[-1] < 16
    assert sorted(p.name for p in Path(first["path"]).iterdir()) == tiny_files()

    seen = len(fake_hub.requests)
    for env in ({}, {"HF_HUB_OFFLINE": "1"}):
        again = use(REPO_ID, tmp_path / "hf", fake_hub.url, **env)
        assert again == {
            "messages": [f"Using the cached copy of {REPO_ID} (commit {fake_hub.repos[REPO_ID].sha[:12]})"],
            "path": first["path"],
        }
    assert len(fake_hub.requests) == seen


def test_an_incomplete_cache_downloads_only_what_is_missing(fake_hub, tmp_path):
    path = Path(use(REPO_ID, tmp_path / "hf", fake_hub.url)["path"])
    (path / "tokenizer.json").resolve().unlink()
    (path / "tokenizer.json").unlink()
    offline = use(REPO_ID, tmp_path / "hf", fake_hub.url, HF_HUB_OFFLINE="1")
    assert "not in the local Hugging Face cache" in offline["error"]
    seen = len(fake_hub.downloads())
    assert use(REPO_ID, tmp_path / "hf", fake_hub.url)["path"] == str(path)
    assert fake_hub.downloads()[seen:] == ["tokenizer.json"]


def test_offline_and_not_cached_names_the_model_the_variable_and_how_to_download(fake_hub, tmp_path):
    result = use(REPO_ID, tmp_path / "hf", fake_hub.url, HF_HUB_OFFLINE="1")
    assert REPO_ID in result["error"] and "HF_HUB_OFFLINE=0" in result["error"]
    assert f"hf download {REPO_ID}" in result["error"]
    assert fake_hub.requests == []


def test_unknown_gated_and_unreachable_repos_are_model_errors_naming_the_model(fake_hub, tmp_path):
    missing = use("fake-org/missing", tmp_path / "hf", fake_hub.url)["error"]
    assert "'fake-org/missing' was not found on the Hugging Face Hub" in missing
    gated = use("fake-org/gated", tmp_path / "hf", fake_hub.url)["error"]
    assert "'fake-org/gated' is gated" in gated and "HF_TOKEN" in gated
    closed = f"http://127.0.0.1:{closed_port()}"
    unreachable = use(REPO_ID, tmp_path / "hf", closed)["error"]
    assert f"could not download model '{REPO_ID}' from {closed}" in unreachable


def test_the_cli_downloads_a_hub_model_it_is_given(fake_hub, tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environ |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": fake_hub.url, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "rapid_cli",
        "eval",
        "--model",
        REPO_ID,
        "--eval-problems",
        "1",
        "--max-new-tokens",
        "1",
    ]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == REPO_ID
    assert sorted(fake_hub.downloads()) == tiny_files()
