"""Generation engines behind one interface (``Engine.generate``); ``make_engine`` picks one by name."""

from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.engines.hf import HFEngine


def make_engine(name: str, policy, **options) -> Engine:
    if name == "vllm" and "vllm" not in ENGINES:
        from rapid_core.engines import vllm  # noqa: F401  (registers; needs the vllm package)
    return ENGINES.get(name, "engine")(policy, **options)


__all__ = ["ENGINES", "Engine", "HFEngine", "Rollouts", "Sampling", "make_engine"]
