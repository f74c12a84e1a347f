"""Hugging Face transformers baseline for `inflight bench --synthetic llama-3.1-8b`.

Builds the Llama-3.1-8B architecture with random bf16 weights directly on the GPU (no
files), then times `generate` for fixed input/output lengths at the given batch sizes
(greedy, no early stop), printing one JSON line per batch: output tokens/s, and for batch
1 the mean decode time per token. Same shapes as inflight's synthetic mode, so the two
figures compare directly (run both in the same device call).

    python3 models/benches/hf_llama_bench.py --batches 1,64 --input-len 128 --output-len 128
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama_31_8b() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    )


def timed_generate(model, batch, input_len, output_len, vocab):
    ids = torch.randint(100, vocab - 100, (batch, input_len), device="cuda")
    kw = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
              pad_token_id=0, eos_token_id=None)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out.shape[1] - input_len


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    a = ap.parse_args()
    cfg = llama_31_8b()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():
        timed_generate(model, 1, 16, 4, cfg.vocab_size)  # warm-up
        for b in [int(x) for x in a.batches.split(",")]:
            secs, new = timed_generate(model, b, a.input_len, a.output_len, cfg.vocab_size)
            rec = {"impl": "transformers " + __import__("transformers").__version__, "model": "llama-3.1-8b (random bf16)",
                   "batch": b, "input_len": a.input_len, "output_len": new, "seconds": round(secs, 3),
                   "output_tok_per_s": round(b * new / secs, 1)}
            if b == 1:
                # Decode time per token: total minus one prefill (timed separately).
                p_secs, _ = timed_generate(model, 1, a.input_len, 1, cfg.vocab_size)
                rec["decode_ms_per_token"] = round((secs - p_secs) / max(new - 1, 1) * 1e3, 3)
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
