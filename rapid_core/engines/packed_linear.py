"""bf16 linear layers on a CPU with their weights kept in oneDNN's blocked layout.

Why: ``F.linear`` hands oneDNN a plain row-major weight, which it reorders into its blocked layout
on every call. A decode step is 211 small matmuls (M = rows, 64 here) and the reorder is a third of
each: on an Intel CPU with AMX a bf16 decoder layer's seven projections took 1.1 ms with
``F.linear`` and 0.78 ms packed once (docs/perf-notes.md, section 20). In float32 packing gained
nothing measurable, so only bf16 packs.

The weights are those of the engine's sampling copy, refreshed in place each round: ``refresh``
repacks a layer only when its weight's in-place version counter moved.
"""

from __future__ import annotations

import torch


def available(model) -> bool:
    """Whether ``model`` (on its device, in its dtype) can run packed bf16 linears."""
    return (
        model.device.type == "cpu"
        and model.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


class PackedLinears:
    """``linear(module, x)`` is ``module(x)`` with the weight packed once per weight version."""

    def __init__(self, modules: list[torch.nn.Linear], rows: int):
        self.modules = modules
        self.rows = rows  # oneDNN picks the blocking for this many input rows; others still work
        self._packed: dict[torch.nn.Linear, torch.Tensor] = {}
        self._versions: dict[torch.nn.Linear, int] = {}

    @torch.inference_mode()
    def refresh(self) -> None:
        for m in self.modules:
            if self._versions.get(m) != m.weight._version:
                self._packed[m] = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), self.rows)
                self._versions[m] = m.weight._version

    def linear(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self._packed[module], module.bias, "none", [], "")
