#!/usr/bin/env python3
"""Golden outputs of Hugging Face transformers for SmolLM2-135M-Instruct loaded from its GGUF
(`from_pretrained(dir, gguf_file=...)`: transformers' own dequantisation and Q/K un-permuting).

Writes to $OUT (or models/testdata/smollm2/): logits.f32 — the last-position logits of each
prompt (little-endian f32, [prompts, vocab]) — and golden.json with the prompts, their token
ids (from our tokenizer, so both sides see the same ids) and 32 greedy tokens each.
Usage: python3 make_smollm2_golden.py path/to/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

# Token ids of the prompts as our tokenizer encodes them (checked against HF tooling by
# tokenizer_smollm2.rs): "The capital of France is", "def fibonacci(n):", "Once upon a
# time", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "日本の首都は".
PROMPTS = json.loads(os.environ["PROMPT_IDS"])


def main():
    path = sys.argv[1]
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2")
    os.makedirs(out, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    last, greedy = [], []
    with torch.no_grad():
        for ids in PROMPTS:
            t = torch.tensor([ids])
            last.append(model(t).logits[0, -1].float())
            gen = model.generate(t, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0, min_new_tokens=32)
            greedy.append(gen[0, len(ids):].tolist())
    torch.stack(last).numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
    import transformers
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({"prompts": PROMPTS, "vocab": int(last[0].shape[0]), "greedy": greedy,
                   "transformers": transformers.__version__, "torch": torch.__version__}, f)
    print("wrote", out, [len(g) for g in greedy])


if __name__ == "__main__":
    sys.exit(main())
