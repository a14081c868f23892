"""Generation engines behind one interface (``Engine.generate``); ``make_engine`` builds the one a
config names, through that engine's ``from_config``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rapid_core.engines.base import ENGINES, Engine, Rollouts, Sampling
from rapid_core.engines.hf import HFEngine

if TYPE_CHECKING:
    from rapid_core.config import TrainConfig
    from rapid_core.models import Policy


def make_engine(cfg: TrainConfig, policy: Policy) -> Engine:
    """The engine ``cfg.engine`` names, built from the config for ``policy``."""
    if cfg.engine == "vllm" and "vllm" not in ENGINES:
        from rapid_core.engines import vllm  # noqa: F401  (registers; needs the vllm package)
    return ENGINES.get(cfg.engine, "engine").from_config(cfg, policy)


__all__ = ["ENGINES", "Engine", "HFEngine", "Rollouts", "Sampling", "make_engine"]
