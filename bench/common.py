"""What every benchmark shares: thread settings, the machine description (with the load beside every
figure, since this CPU is shared), the matrix-multiply rate, and writing a result table as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def add_common_args(parser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice). On a CPU shared with other "
        "jobs 1 thread can beat 2 by 5x: a descheduled OpenMP thread stalls every barrier",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default=None, help="JSON file for the result table")


def apply_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """Where a figure was measured: CPU model and flags that matter, GPU, versions, threads, load."""
    cpu = ""
    flags: set[str] = set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": load_average(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(result: dict[str, Any], out: str | None, default_name: str) -> Path:
    """Write the table to ``out`` (default bench/results/<default_name>), and a copy under $OUT if set."""
    path = Path(out) if out else RESULTS / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str)
    path.write_text(text)
    if os.environ.get("OUT"):
        extra = Path(os.environ["OUT"]) / path.name
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(text)
    print(f"saved {path}")
    return path


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of an n x n x n matmul: the machine's practical upper bound for a forward pass."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    start, it = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        it += 1
    sync(device)
    return 2 * n**3 * it / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
