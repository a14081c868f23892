"""The model cache under concurrency: workers (or benchmark runs) started together on a fresh cache
each build the same model directory; the first to publish wins and the others use its copy instead of
failing with "Directory not empty" (a real failure: two time-to-accuracy runs started at once)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rapid_core.models import publish_model_dir
from tests.conftest import REPO


def _model_dir(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / "config.json").write_text(marker)
    return path


def test_publish_moves_a_fresh_directory_into_place(tmp_path):
    tmp = _model_dir(tmp_path / "m.tmp1", "mine")
    assert publish_model_dir(tmp, tmp_path / "m") == str(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").read_text() == "mine" and not tmp.exists()


def test_losing_the_race_keeps_the_winner_and_discards_the_copy(tmp_path):
    target = _model_dir(tmp_path / "m", "winner")
    tmp = _model_dir(tmp_path / "m.tmp2", "loser")
    assert publish_model_dir(tmp, target) == str(target)
    assert (target / "config.json").read_text() == "winner" and not tmp.exists()


def test_a_half_written_target_is_an_error_not_a_model(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"\0")  # no config.json: not a published model
    tmp = _model_dir(tmp_path / "m.tmp3", "mine")
    with pytest.raises(OSError):
        publish_model_dir(tmp, target)
    assert tmp.exists()  # nothing of ours is thrown away when the cache is in an unknown state


def test_processes_building_one_model_at_once_all_succeed(tmp_path):
    env = {**os.environ, "RAPID_CACHE_DIR": str(tmp_path / "cache")}
    # Each process imports first, then all start building at one instant, so their builds overlap.
    start = time.time() + 15
    code = (
        "import time, transformers\nfrom rapid_core.models import ensure_tiny_model\n"
        f"time.sleep(max(0.0, {start} - time.time()))\nprint(ensure_tiny_model())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert {out.strip() for out, _ in outs} == {str(tmp_path / "cache" / "tiny-random")}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny-random"]  # no stray copies
