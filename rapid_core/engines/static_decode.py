"""Decode over a preallocated (static) KV cache, with the step captured as a CUDA graph on GPUs.

Why: a decode step of a small model is ~600 small kernels. Launched one by one from Python they
cost ~20 ms a step on an H200 whatever the batch (docs/benchmarks.md), 0.1-0.5% of the matmul rate.
With fixed shapes the whole step (every layer, the output layer, sampling and the behaviour
log-prob) is captured once per (row bucket, cache length, sampling) and replayed with one launch.

The step restates the Llama / Qwen2 / Qwen3 decoder layer over the model's own modules (norms,
projections, MLP) and weights, so it samples from exactly the model the ``hf`` engine holds (the
merged sampling copy, refreshed in place, so captured graphs stay valid across rounds). The prompt
pass stays with transformers (one pass per distinct prompt); its KV cache is copied into the
buffers. Rows run in buckets of powers of two: finished rows are masked, and once the live rows
fit a smaller bucket they are compacted into it. Every row reads its uniforms from a stream drawn
up front, as the eager loop does, so both loops sample the same tokens from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rapid_core.engines import packed_linear
from rapid_core.engines.base import Sampling

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3")
# RoPE types whose frequencies do not depend on the sequence length: a precomputed table is exact.
STATIC_ROPE = ("default", "linear", "llama3", "yarn")
MIN_ROWS = 8
LENGTH_QUANTUM = 64  # cache lengths are rounded up to this, so graphs are reused across rounds
SAMPLE_BLOCK = 256  # tokens per block of the two-level sampler


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot use the static decoder, or None when it can."""
    cfg = model.config
    if cfg.model_type not in SUPPORTED_TYPES:
        return f"model type {cfg.model_type!r} (static decode supports {', '.join(SUPPORTED_TYPES)})"
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return "sliding-window attention"
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"RoPE type {rope!r} depends on the sequence length"
    return None


def bucket(rows: int) -> int:
    """The smallest power of two >= rows (at least MIN_ROWS)."""
    return max(MIN_ROWS, 1 << (rows - 1).bit_length())


def sample_categorical(logp: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per row from softmax(logp) ([rows, V] float, any scale) with uniforms ``u`` ([rows],
    float64; drawn here when None)."""
    probs, _ = _unnormalised(logp, 1.0)
    return _inverse_cdf(probs, _running_mass(probs), u)


def next_tokens(
    logits: torch.Tensor, sampling: Sampling, u: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's next token and its float32 log-prob under softmax(logits / T) (T = 1 when greedy).
    Sampled rows read their uniform from ``u``; both decode loops draw here.

    No log-softmax over the vocabulary: one float32 pass makes exp(logits / T - max), the sampler
    draws from it, and the chosen token's log-prob is its logit / T - max - log(total mass). On a
    CPU that is ~6 ms a step at 64 x 49,152 against ~20 with a log-softmax, a zero-filled copy and
    an exp (docs/perf-notes.md, section 20)."""
    temperature = 1.0 if sampling.greedy else sampling.temperature
    probs, top = _unnormalised(logits, temperature)
    mass = _running_mass(probs)
    nxt = logits.argmax(dim=-1) if sampling.greedy else _inverse_cdf(probs, mass, u)
    chosen = logits.gather(1, nxt[:, None]).float()
    if temperature != 1.0:
        chosen = chosen / temperature
    return nxt, (chosen - top).squeeze(1) - mass[:, -1].log().float()


def _unnormalised(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(logits / T - max) as float32 [rows, V padded to whole SAMPLE_BLOCKs] (padding 0) and the
    max [rows, 1]: probabilities up to each row's normaliser, which the sampler never needs."""
    rows, vocab = logits.shape
    probs = logits.new_empty((rows, -(-vocab // SAMPLE_BLOCK) * SAMPLE_BLOCK), dtype=torch.float32)
    probs[:, vocab:] = float("-inf")
    scaled = probs[:, :vocab]
    scaled.copy_(logits)
    if temperature != 1.0:
        scaled.div_(temperature)
    top = scaled.amax(dim=-1, keepdim=True)
    probs.sub_(top).exp_()
    return probs, top


def _running_mass(probs: torch.Tensor) -> torch.Tensor:
    """[rows, blocks] float64 running sum of the SAMPLE_BLOCK-token block masses. Each block sums 256
    float32 terms (relative error ~1e-7); the running sum over blocks is float64, so the tail of a
    150k vocabulary keeps its mass."""
    return probs.view(probs.shape[0], -1, SAMPLE_BLOCK).sum(dim=-1).double().cumsum(dim=-1)


def _inverse_cdf(probs: torch.Tensor, mass: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """One draw per row by inverse CDF: one uniform per row instead of vocabulary-sized noise, no
    host sync.

    In two levels: the uniform picks a block of SAMPLE_BLOCK tokens by the running float64 sum of
    the block masses, then a token inside that block by the running sum within it. The draw is the
    one a float64 cumulative sum over the whole vocabulary gives (the probabilities are float32),
    at a tenth of its cost on a CPU: a float64 exp and cumsum over 49k tokens x 64 rows took 35 ms
    a decode step (docs/perf-notes.md, section 18)."""
    rows = probs.shape[0]
    blocks = probs.view(rows, -1, SAMPLE_BLOCK)
    if u is None:
        u = torch.rand(rows, dtype=torch.float64, device=probs.device)
    target = (u[:, None] * mass[:, -1:]).contiguous()
    # right=True: the first block whose running mass exceeds the target, so never an empty one;
    # the minimum guards the top end against rounding (u * total rounding up to the total).
    j = torch.minimum(torch.searchsorted(mass, target, right=True), _last_positive(mass))
    before = torch.where(j > 0, mass.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(target))
    inner = blocks.gather(1, j[:, :, None].expand(rows, 1, SAMPLE_BLOCK)).squeeze(1).double().cumsum(dim=-1)
    k = torch.minimum(
        torch.searchsorted(inner, (target - before).contiguous(), right=True), _last_positive(inner)
    )
    return (j * SAMPLE_BLOCK + k).squeeze(1)


def _last_positive(running: torch.Tensor) -> torch.Tensor:
    """[rows, 1] index of the last entry with positive mass: where the running sum reaches its end."""
    return (running < running[:, -1:]).sum(dim=-1, keepdim=True)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class _Buffers:
    """Everything a captured step reads and writes; shapes fixed for the buffers' lifetime."""

    rows: int
    length: int
    keys: list[torch.Tensor]  # per layer [rows, kv_heads, length, head_dim]
    values: list[torch.Tensor]
    mask: torch.Tensor  # [rows, length] bool: cache columns a row attends to
    cos: torch.Tensor  # [length, head_dim] RoPE table by position
    sin: torch.Tensor
    tok: torch.Tensor  # [rows] the token each row feeds next
    pos: torch.Tensor  # [rows] its position
    slot: torch.Tensor  # [1] the cache column it is written to
    step: torch.Tensor  # [1] index of the token being sampled
    done: torch.Tensor  # [rows] finished (or padding) rows
    row: torch.Tensor  # [rows] output row of each row; ``rows`` = the scratch row
    uniforms: torch.Tensor  # [length, rows] float64, one per row and step
    out_tok: torch.Tensor  # [rows + 1, length]
    out_lp: torch.Tensor  # [rows + 1, length] float32


class StaticDecoder:
    """``decode`` continues a prefilled batch on static buffers; ``graphs`` captures the step."""

    CHECK_EVERY = 4  # decode steps between host reads of the finished flags

    def __init__(self, model, eos_ids: torch.Tensor, pad_id: int, graphs: bool, compiled: bool = False):
        self.model = model
        self.decoder, self.lm_head = model.model, model.lm_head
        cfg = model.config
        self.layers = list(self.decoder.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.eos = eos_ids.to(model.device)
        self.pad_id = pad_id
        self.graphs = graphs and model.device.type == "cuda"
        # torch.compile of the step (fixed shapes per bucket): fuses the small element-wise ops.
        self._compiled_step = torch.compile(self._step, dynamic=False) if compiled else None
        self.packed = None  # bf16 on a CPU, eager steps: weights in oneDNN's layout (packed_linear.py)
        if not compiled and packed_linear.available(model):
            projections = ("q_proj", "k_proj", "v_proj", "o_proj")
            linears = [getattr(layer.self_attn, name) for layer in self.layers for name in projections]
            linears += [
                getattr(layer.mlp, name)
                for layer in self.layers
                for name in ("gate_proj", "up_proj", "down_proj")
            ]
            self.packed = packed_linear.PackedLinears([*linears, self.lm_head], rows=64)
        self.buf: _Buffers | None = None
        self._captured: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._pool = None

    # --- buffers -----------------------------------------------------------------------------------
    def _ensure_buffers(self, rows: int, length: int) -> _Buffers:
        b = self.buf
        # A longer buffer serves shorter batches (masked columns cost attention only), up to 2x.
        if b is not None and b.rows >= rows and length <= b.length <= 2 * length:
            return b
        if b is not None and length <= b.length <= 2 * length:
            length = b.length
        rows = max(rows, b.rows if b is not None and b.length == length else 0)
        self.buf, self._captured = None, {}  # drop the old buffers and the graphs that read them
        if self.graphs:
            torch.cuda.empty_cache()
            self._pool = torch.cuda.graph_pool_handle()
        dev, dt = self.model.device, self.model.dtype
        shape = (rows, self.kv_heads, length, self.head_dim)
        positions = torch.arange(length, device=dev)[None]
        probe = torch.zeros(1, dtype=dt, device=dev)
        cos, sin = self.decoder.rotary_emb(probe, positions)
        self.buf = _Buffers(
            rows,
            length,
            keys=[torch.zeros(shape, dtype=dt, device=dev) for _ in self.layers],
            values=[torch.zeros(shape, dtype=dt, device=dev) for _ in self.layers],
            mask=torch.zeros((rows, length), dtype=torch.bool, device=dev),
            cos=cos[0].to(dt),
            sin=sin[0].to(dt),
            tok=torch.zeros(rows, dtype=torch.long, device=dev),
            pos=torch.zeros(rows, dtype=torch.long, device=dev),
            slot=torch.zeros(1, dtype=torch.long, device=dev),
            step=torch.zeros(1, dtype=torch.long, device=dev),
            done=torch.ones(rows, dtype=torch.bool, device=dev),
            row=torch.full((rows,), rows, dtype=torch.long, device=dev),
            uniforms=torch.zeros((length, rows), dtype=torch.float64, device=dev),
            out_tok=torch.zeros((rows + 1, length), dtype=torch.long, device=dev),
            out_lp=torch.zeros((rows + 1, length), dtype=torch.float32, device=dev),
        )
        return self.buf

    def _linear(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return module(x) if self.packed is None else self.packed.linear(module, x)

    # --- one step ----------------------------------------------------------------------------------
    def _attend(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        scale: float,
        upto: int | None,
    ) -> torch.Tensor:
        """Grouped-query attention of one new token per row over the cache. q [n, heads, 1, d];
        keys / values [n, kv_heads, L, d] -> [n, 1, heads * d].

        Eager steps know ``upto``, the cache columns in use (later ones hold no token yet): they run
        torch's fused attention over those columns, ``mask`` being the bool [n, L] of columns a row
        attends to (on a CPU 2.3x faster than the two batched matmuls below: docs/perf-notes.md,
        section 20). A captured step has fixed shapes, so it reads the whole buffer with ``mask`` an
        additive float [n, L] (0 where a row attends, -inf elsewhere)."""
        n, group, d = q.shape[0], self.heads // self.kv_heads, self.head_dim
        if upto is not None:
            out = torch.nn.functional.scaled_dot_product_attention(
                q,
                keys[:, :, :upto],
                values[:, :, :upto],
                attn_mask=mask[:, None, None, :upto],
                scale=scale,
                enable_gqa=True,
            )
            return out.transpose(1, 2).reshape(n, 1, self.heads * d)
        length = keys.shape[2]
        k = keys.reshape(n * self.kv_heads, length, d)
        v = values.reshape(n * self.kv_heads, length, d)
        scores = torch.bmm(k, q.reshape(n * self.kv_heads, group, d).transpose(1, 2))  # [n*kv, L, group]
        scores = scores.view(n, self.kv_heads, length, group).float().mul_(scale)
        scores.add_(mask[:, None, :, None])
        probs = torch.softmax(scores, dim=2).to(v.dtype).view(n * self.kv_heads, length, group)
        return torch.bmm(probs.transpose(1, 2), v).reshape(n, 1, self.heads * d)

    def _record(self, logits: torch.Tensor, n: int, sampling: Sampling) -> None:
        """Sample the next token of rows [:n] from ``logits`` [n, V] and record it with its log-prob
        at the sampling temperature; finished rows write to the scratch row."""
        b = self.buf
        nxt, lp = next_tokens(logits, sampling, b.uniforms.index_select(0, b.step)[0, :n])
        done = b.done[:n]
        out_row = torch.where(done, torch.full_like(b.row[:n], b.rows), b.row[:n])
        col = b.step.expand(n)
        b.out_tok.index_put_((out_row, col), nxt)
        b.out_lp.index_put_((out_row, col), lp)
        done |= (nxt[:, None] == self.eos[None, :]).any(dim=1)
        b.tok[:n] = nxt

    def _step(self, n: int, sampling: Sampling, upto: int | None = None) -> None:
        """Feed each row's token (written at cache column ``slot``), sample the next one. ``upto``:
        the cache columns in use after this write, when the caller knows it (eager runs)."""
        b = self.buf
        mask = b.mask[:n]
        mask.index_fill_(1, b.slot, True)
        if upto is None:  # one additive mask for all layers: 0 where a row attends, -inf elsewhere
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(
                ~mask, float("-inf")
            )
        pos = b.pos[:n]
        cos = b.cos.index_select(0, pos)[:, None, None, :]
        sin = b.sin.index_select(0, pos)[:, None, None, :]
        h = self.decoder.embed_tokens(b.tok[:n])[:, None, :]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = self._linear(attn.q_proj, x).view(n, 1, self.heads, self.head_dim)
            k = self._linear(attn.k_proj, x).view(n, 1, self.kv_heads, self.head_dim)
            v = self._linear(attn.v_proj, x).view(n, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            if hasattr(attn, "q_norm"):  # Qwen3 normalises each head before RoPE
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = b.keys[i][:n], b.values[i][:n]
            keys.index_copy_(2, b.slot, k)
            values.index_copy_(2, b.slot, v)
            h = h + self._linear(attn.o_proj, self._attend(q, keys, values, mask, attn.scaling, upto))
            mlp, x = layer.mlp, layer.post_attention_layernorm(h)
            up = self._linear(mlp.up_proj, x)
            h = h + self._linear(mlp.down_proj, mlp.act_fn(self._linear(mlp.gate_proj, x)) * up)
        self._record(self._linear(self.lm_head, self.decoder.norm(h)[:, 0]), n, sampling)
        pos += 1
        b.slot += 1
        b.step += 1

    def _runner(self, n: int, sampling: Sampling):
        """A callable running one step given the cache columns in use (``upto``)."""
        if self._compiled_step is not None:  # fixed shapes: a new ``upto`` each step would recompile
            return lambda upto: self._compiled_step(n, sampling)
        if not self.graphs:
            return lambda upto: self._step(n, sampling, upto)
        key = (n, self.buf.length, sampling.greedy, sampling.temperature)
        graph = self._captured.get(key)
        if graph is None:
            graph = self._capture(n, sampling)
            self._captured[key] = graph
        return lambda upto: graph.replay()

    def _capture(self, n: int, sampling: Sampling) -> torch.cuda.CUDAGraph:
        b = self.buf
        # Warm-up runs (cuBLAS handles, allocator) change the state a real step reads: keep a copy.
        saved = [t.clone() for t in (b.mask, b.tok, b.pos, b.slot, b.step, b.done)]

        def restore() -> None:
            for dst, src in zip((b.mask, b.tok, b.pos, b.slot, b.step, b.done), saved, strict=True):
                dst.copy_(src)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(n, sampling)
                restore()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(n, sampling)
        restore()
        return graph

    def _compact(self, n: int, m: int) -> None:
        """Move the live rows of bucket n to the front and continue in bucket m."""
        b = self.buf
        keep = (~b.done[:n]).nonzero().squeeze(1)
        k = keep.numel()
        for t in (*b.keys, *b.values, b.mask, b.tok, b.pos, b.done, b.row):
            t[:k] = t[:n].index_select(0, keep)
        b.uniforms[:, :k] = b.uniforms[:, :n].index_select(1, keep)
        self._pad_rows(k, m)

    def _pad_rows(self, start: int, end: int) -> None:
        """Rows start..end carry no sample: finished from the start, writing to the scratch row."""
        b = self.buf
        b.done[start:end] = True
        b.row[start:end] = b.rows
        b.tok[start:end] = self.pad_id
        b.pos[start:end] = 0
        b.mask[start:end] = False
        b.mask[start:end, 0] = True  # one visible column keeps their softmax finite

    # --- the loop ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(
        self, logits: torch.Tensor, prefill, sampling: Sampling, uniforms: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Continue ``prefill`` (rows' first-token logits [b, V] and the Prefill) for
        ``sampling.max_new_tokens`` tokens. Returns (tokens [b, steps], log-probs [b, steps] on the
        device, pad after a row's EOS; decode steps run)."""
        rows, steps = logits.shape[0], sampling.max_new_tokens
        width = prefill.attention.shape[1]
        length = -(-(width + steps) // LENGTH_QUANTUM) * LENGTH_QUANTUM
        n = bucket(rows)
        b = self._ensure_buffers(n, length)
        if self.packed is not None:
            self.packed.refresh()
        for i, (k, v) in enumerate(prefill.layer_kv()):
            b.keys[i][:rows, :, :width] = k[prefill.copy_of]
            b.values[i][:rows, :, :width] = v[prefill.copy_of]
        b.mask[:rows] = False
        b.mask[:rows, :width] = prefill.attention.bool()
        b.pos[:rows] = prefill.next_pos.view(-1)
        b.done[:rows] = False
        b.row[:rows] = torch.arange(rows, device=b.row.device)
        self._pad_rows(rows, n)
        b.out_tok.fill_(self.pad_id)
        b.out_lp.zero_()
        if uniforms is not None:
            b.uniforms[:steps, :rows] = uniforms
        b.step.zero_()
        self._record(logits, rows, sampling)  # token 0 from the prompt pass
        b.step.fill_(1)
        b.slot.fill_(width)
        run, ran = self._runner(n, sampling), 0
        for t in range(1, steps):
            if t % self.CHECK_EVERY == 1 or self.CHECK_EVERY == 1:
                live = int((~b.done[:n]).sum())
                if live == 0:
                    break
                if bucket(live) < n:
                    self._compact(n, bucket(live))
                    n = bucket(live)
                    run = self._runner(n, sampling)
            run(width + t)
            ran += 1
        return b.out_tok[:rows, :steps], b.out_lp[:rows, :steps], ran
