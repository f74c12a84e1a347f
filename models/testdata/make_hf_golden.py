#!/usr/bin/env python3
"""Golden outputs from Hugging Face transformers for the safetensors path.

For each architecture, makes a small random-weight checkpoint with the exact HF model
class (`AutoModelForCausalLM.from_config`), saves it with `save_pretrained` (safetensors,
float32), and records, computed by transformers in float32 on the CPU:
  - logits.f32: the logits of every position of every prompt (little-endian f32,
    prompts concatenated, [tokens, vocab]);
  - golden.json: the prompts, the logits' shape, and greedy continuations of 32 tokens.
The Rust test models/tests/hf_golden.rs compares our loader + CPU forward with them.

Needs torch + transformers (the GPU machine has both). Writes to models/testdata/hf/<arch>/
(or $OUT/<arch>/ when OUT is set, to bring the files back from the GPU machine).
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

torch.manual_seed(1234)
VOCAB = 384
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIGS = {
    # Llama 3.1-style: GQA, separate LM head, llama3 RoPE scaling.
    "llama": LlamaConfig(**COMMON, rope_theta=500000.0, tie_word_embeddings=False,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    # SmolLM2-style: tied embeddings, plain RoPE.
    "llama-tied": LlamaConfig(**COMMON, rope_theta=100000.0, tie_word_embeddings=True),
    # Qwen2: Q/K/V biases.
    "qwen2": Qwen2Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=False),
    # GPT-2: learned positions, LayerNorm with bias, tanh GELU, fused c_attn (Conv1D), tied head.
    "gpt2": GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=4, n_inner=176,
                       activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=1,
                       eos_token_id=2, pad_token_id=0),
}
# Only these (default: all), e.g. ONLY=gpt2.
if os.environ.get("ONLY"):
    CONFIGS = {k: v for k, v in CONFIGS.items() if k in os.environ["ONLY"].split(",")}
PROMPTS = [[1, 5, 9, 200, 17], [1, 383, 2, 44], [7], [1] + list(range(100, 130)), [300, 300, 300, 12, 13, 14, 15, 16, 17, 18]]


def main():
    root = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")
    for name, cfg in CONFIGS.items():
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            for p in model.parameters():  # larger than the default init, so logits differ clearly
                p.normal_(0.0, 0.08)
        model.save_pretrained(out, safe_serialization=True)
        logits, greedy = [], []
        with torch.no_grad():
            for prompt in PROMPTS:
                ids = torch.tensor([prompt])
                logits.append(model(ids).logits[0].float())
                gen = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=None,
                                     pad_token_id=0, min_new_tokens=32)
                greedy.append(gen[0, len(prompt):].tolist())
        torch.cat(logits).numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
        with open(os.path.join(out, "golden.json"), "w") as f:
            json.dump({"prompts": PROMPTS, "vocab": VOCAB, "greedy": greedy,
                       "transformers": __import__("transformers").__version__,
                       "torch": torch.__version__}, f)
        for extra in ("generation_config.json",):
            p = os.path.join(out, extra)
            if os.path.exists(p):
                os.remove(p)
        print(name, "->", out, sorted(os.listdir(out)))


if __name__ == "__main__":
    sys.exit(main())
