#!/usr/bin/env bash
# The whole-engine GPU benchmarks, run on the GPU machine from the unpacked bundle (see
# README "The GPU loop"): the synthetic Llama-3.1-8B (random bf16 weights made on the GPU)
# through `inflight bench static` and `bench serve` (128/128, rate inf), SmolLM2 through
# `bench serve` when its GGUF is present, then Hugging Face transformers on the same
# architecture and batches. Logs and JSON under $OUT.
#   bash models/benches/gpu_engine_bench.sh [path/to/smollm2.gguf]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/gpu-bundle/bin/inflight"
out="${OUT:-$root/gpu-bundle/out}"
mkdir -p "$out"
rc=0
engine=(--max-seq-len 4096 --kv-cache-mb 60000 --max-num-tokens 8192)
echo "== bench static, synthetic llama-3.1-8b, 128/128"
"$bin" bench static --synthetic llama-3.1-8b --device cuda "${engine[@]}" --max-batch-size 256 \
  --batch-sizes 1,64,128,256 --input-output-lens 128,128 --warmup 1 --runs 2 --json "$out/static-llama8b.json" || rc=1
echo "== bench serve, synthetic llama-3.1-8b, 128/128, rate inf, 512 requests"
"$bin" bench serve --synthetic llama-3.1-8b --device cuda "${engine[@]}" --max-batch-size 256 \
  --num-requests 512 --input-len 128 --output-len 128 --request-rate inf --json "$out/serve-llama8b.json" || rc=1
if [ -n "${1:-}" ] && [ -f "$1" ]; then
  echo "== bench serve, SmolLM2 ($1), 128/128, rate inf, 512 requests"
  "$bin" bench serve --model "$1" --device cuda "${engine[@]}" --max-batch-size 256 \
    --num-requests 512 --input-len 128 --output-len 128 --request-rate inf --json "$out/serve-smollm2.json" || rc=1
fi
echo "== transformers, same architecture"
python3 "$here/hf_llama_bench.py" --batches 1,64 --input-len 128 --output-len 128 | tee "$out/hf-llama8b.jsonl" || rc=1
echo "== done: rc=$rc"
exit $rc
