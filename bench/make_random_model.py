"""A random-weight model with SmolLM2-135M's exact shape and a tokenizer that needs no download, for
benchmarks on machines without the SmolLM2 file or network (bench/gpu_check.sh). Accuracy of this
model is meaningless; its speed is SmolLM2-135M's.

    python bench/make_random_model.py --tokenizer bench/gpu_assets/tokenizer --out /tmp/smollm2-random
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def smollm2_135m_config(tok) -> LlamaConfig:
    shape = dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        shape["rope_parameters"] = {"rope_type": "default", "rope_theta": 100000.0}
    else:
        shape["rope_theta"] = 100000.0
    return LlamaConfig(**shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default="bench/gpu_assets/tokenizer")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    if (out / "config.json").is_file():
        print(f"{out} exists")
        return
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = LlamaForCausalLM(smollm2_135m_config(tok))
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"saved {out}: {n / 1e6:.1f} M parameters, vocab {len(tok)}")


if __name__ == "__main__":
    main()
