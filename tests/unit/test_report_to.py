"""report_to: TensorBoard event files and Weights & Biases runs (offline), read back from disk."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from rapid_core.callbacks import CallbackList
from rapid_core.config import REPORT_TO, RunPaths, make_config
from rapid_core.errors import ConfigError
from rapid_core.report_to import REPORTERS, build_reporters, reporter_names
from rapid_core.trainer import train


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(out: Path) -> list[dict]:
    """History rows of the offline W&B run under ``out``: its .wandb file is a LevelDB-style log of
    Record protobufs (32 KiB blocks; each chunk has crc32, length, type 1 full / 2 first / 4 last)."""
    rows = []
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        rows += _history_records(path.read_bytes())
    return rows


def _history_records(data: bytes) -> list[dict]:
    rows, pos, buf = [], 7, b""
    if data[:4] != b":W&B":
        return rows
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                )
    return rows


def wandb_rows_at(out: Path, last_step: int, timeout: float = 60) -> dict[int, dict]:
    """History merged per train/global_step, once the row of ``last_step`` is on disk: wandb's
    service process writes the log after ``finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        by_step: dict[int, dict] = {}
        for row in wandb_history(out):
            by_step.setdefault(row["train/global_step"], {}).update(row)
        if last_step in by_step or time.monotonic() > deadline:
            return by_step
        time.sleep(0.5)


def step(n: int, round_index: int, **values) -> dict:
    return {"step": n, "round": round_index, "loss": 0.1 * n, "grad_norm": 1.0, "ess": 0.9, **values}


def round_record(k: int, last_step: int) -> dict:
    return {
        "round": k,
        "step": last_step,
        "reward_mean": 0.25 * (k + 1),
        "accuracy": 0.5,
        "grader_status": {"ok": 3, "wrong": 1},
        "example": {"completion": "text is left out"},
    }


def feed(callbacks: CallbackList, rounds: range, steps_per_round: int = 2, evals: bool = True) -> None:
    callbacks.on_start({"start_round": rounds.start, "total_rounds": rounds.stop})
    if evals and rounds.start == 0:
        callbacks.on_eval("before", {"pass@1": 0.2, "problems": 5})
    for k in rounds:
        for u in range(steps_per_round):
            callbacks.on_step(step(k * steps_per_round + u + 1, k))
        callbacks.on_round(round_record(k, (k + 1) * steps_per_round))
    if evals:
        callbacks.on_eval("after", {"pass@1": 0.6, "problems": 5})
    callbacks.on_end({})


def test_report_to_names_follow_trl():
    assert reporter_names("none") == [] and reporter_names([]) == []
    assert reporter_names("all") == ["tensorboard", "wandb"] == REPORTERS.names() == list(REPORT_TO[2:])
    assert reporter_names(["wandb", "wandb"]) == ["wandb"]
    assert build_reporters(make_config(), RunPaths()) == []  # off by default
    assert make_config(report_to=None).report_to == "none"  # `rapid train --report-to none`
    with pytest.raises(ConfigError) as err:
        make_config(report_to=["tensorboard", "comet"])
    assert err.value.field == "report_to" and "comet" in str(err.value)


def test_tensorboard_logs_steps_rounds_and_evals_against_the_optimizer_step(tmp_path):
    cfg, paths = make_config(report_to="tensorboard"), RunPaths(output_dir=tmp_path)
    feed(CallbackList(build_reporters(cfg, paths)), range(3))
    got = scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(n, pytest.approx(0.1 * n)) for n in range(1, 7)]
    assert got["round/reward_mean"] == [(2, 0.25), (4, 0.5), (6, 0.75)]
    assert got["round/grader_status/ok"] == [(2, 3.0), (4, 3.0), (6, 3.0)]
    assert got["eval/pass@1"] == [(0, pytest.approx(0.2)), (6, pytest.approx(0.6))]
    assert not any("example" in tag for tag in got)


def test_resumed_tensorboard_log_drops_the_replayed_steps(tmp_path):
    cfg, paths = make_config(report_to="tensorboard"), RunPaths(output_dir=tmp_path)
    feed(CallbackList(build_reporters(cfg, paths)), range(3), evals=False)  # crashed after round 2 ...
    feed(
        CallbackList(build_reporters(cfg, paths)), range(2, 4)
    )  # ... and resumed from the checkpoint of round 2
    got = scalars(tmp_path / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == list(range(1, 9))
    assert [s for s, _ in got["round/reward_mean"]] == [2, 4, 6, 8]


def test_wandb_offline_run_logs_every_record_and_resumes_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg, paths = make_config(report_to=["wandb"]), RunPaths(output_dir=tmp_path)
    feed(CallbackList(build_reporters(cfg, paths)), range(2))
    run_id = (tmp_path / "wandb-run-id").read_text()
    by_step = wandb_rows_at(tmp_path, 4)
    assert by_step[0]["eval/pass@1"] == pytest.approx(0.2)
    assert by_step[3]["train/loss"] == pytest.approx(0.3)
    assert by_step[4]["round/reward_mean"] == 0.5 and by_step[4]["eval/pass@1"] == pytest.approx(0.6)
    # wandb names a session's directory by the second it starts in: start the second one in a
    # later second, or a fast machine puts both sessions in one directory.
    time.sleep(1.01 - time.time() % 1)
    feed(CallbackList(build_reporters(cfg, paths)), range(2, 3), evals=False)
    assert (tmp_path / "wandb-run-id").read_text() == run_id
    assert wandb_rows_at(tmp_path, 6)[6]["round/reward_mean"] == 0.75
    assert len(list(tmp_path.glob(f"wandb/offline-run-*-{run_id}"))) == 2  # two sessions of one run id


def test_trainer_reports_to_tensorboard_and_wandb(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(
        model=tiny_model,
        rounds=2,
        prompts_per_round=2,
        group_size=2,
        mini_batch_size=2,
        max_new_tokens=4,
        eval_problems=2,
        eval_k=1,
        dtype="fp32",
        report_to=["tensorboard", "wandb"],
        drop_zero_std=False,  # train on the tiny model's all-equal groups too: steps to report
    )
    summary = train(cfg, RunPaths(output_dir=tmp_path))
    got = scalars(tmp_path / "tensorboard")
    steps = summary["steps"]
    assert [s for s, _ in got["train/grad_norm"]] == list(range(1, steps + 1))
    assert len(got["round/reward_mean"]) == 2 and got["round/reward_mean"][-1][0] == steps
    assert [s for s, _ in got["eval/pass@1"]] == [0, steps]
    by_step = wandb_rows_at(tmp_path, steps)
    assert "round/reward_mean" in by_step[steps] and "eval/pass@1" in by_step[0]
    assert {s for s, row in by_step.items() if "train/ess" in row} == set(range(1, steps + 1))
