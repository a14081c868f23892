"""Which prompts a round draws and how its samples split into mini-batches (RAPID.md steps 2 and 5):
pure functions of the data position, the seed and the round, so a checkpoint only stores integers."""

from __future__ import annotations

import random

import torch

from rapid_core.config import TrainConfig


def prompt_indices(n_records: int, position: int, count: int, seed: int) -> list[int]:
    """Prompts ``position .. position + count`` of an endless stream of seeded epoch permutations."""
    out = []
    for pos in range(position, position + count):
        epoch, offset = divmod(pos, n_records)
        perm = list(range(n_records))
        random.Random(f"{seed}-epoch-{epoch}").shuffle(perm)
        out.append(perm[offset])
    return out


def plan_minibatches(
    cfg: TrainConfig, zero_std: torch.Tensor, round_index: int, truncated: torch.Tensor | None = None
) -> list[list[int]]:
    """Shuffle a round's samples (laid out group by group) into mini-batches of ``mini_batch_size``:
    U = B / m of them, step u of the round trains on the u-th. Groups whose rewards are all equal
    are left out when ``cfg.drops_zero_std``, and samples flagged in ``truncated`` when
    ``cfg.mask_truncated``; ``minibatch_grouping=groups`` shuffles whole prompt groups."""
    g, n = cfg.group_size, len(zero_std) * cfg.group_size
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + round_index)
    trains = torch.ones(n, dtype=torch.bool)
    if cfg.drops_zero_std:
        trains &= ~zero_std.repeat_interleave(g)
    if cfg.mask_truncated and truncated is not None:
        trains &= ~truncated
    keep = torch.arange(n)[trains]
    if cfg.minibatch_grouping == "groups":
        kept = set(keep.tolist())
        groups = torch.randperm(n // g, generator=gen).tolist()
        order = [q * g + j for q in groups for j in range(g) if q * g + j in kept]
    else:
        order = keep[torch.randperm(len(keep), generator=gen)].tolist()
    m = cfg.mini_batch_size
    return [order[s : s + m] for s in range(0, len(order), m)]
