"""Download a job's adapter archive, unpack it and load it with PEFT onto the tiny base model."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx


def load_downloaded_adapter(http: httpx.Client, url: str, dest: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rapid_core.models import ensure_tiny_model

    response = http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    assert (dest / "adapter_config.json").is_file() and (dest / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(ensure_tiny_model())
    return PeftModel.from_pretrained(base, str(dest))
