#!/usr/bin/env bash
# The headline at real size: `bitconv fetch 1bitLLM/bitnet_b1_58-3B --quant tl1` against the
# test suite's imitation of the Hub, serving a random checkpoint with bitnet_b1_58-3B's real
# shapes (hidden 3200, FFN 8640, 26 layers, 32 heads, vocab 32002, fp32, about 13.3 GB in 3
# shards; the bundled tiny tokenizer stands in). Needs python3 with numpy, /usr/bin/time and
# about 30 GB of disk in WORKDIR (the checkpoint, the Hugging Face cache copy, the output).
#
#   benches/headline_3b.sh [WORKDIR] [QUANT]
#
# Prints fetch's own report (download, convert and validation times, the verdict) and
# /usr/bin/time's wall time and peak resident set size of the whole command.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/headline}")
quant=${2:-tl1}
ck="$work/bitnet_b1_58-3B"
mkdir -p "$work"
if [ ! -f "$ck/model.safetensors.index.json" ]; then
  python3 benches/make_checkpoint.py "$ck" --shape 3B --dtype f32 --shards 3
fi
for f in tokenizer.json tokenizer.model tokenizer_config.json special_tokens_map.json; do
  cp "tests/data/tiny/ckpt-fp16/$f" "$ck/"
done
rm -rf "$work/run" && mkdir -p "$work/run"
cargo build --release --quiet
BITCONV_BIN="$PWD/target/release/bitconv" BITCONV_HEADLINE_CHECKPOINT="$ck" \
  BITCONV_HEADLINE_WORK="$work/run" BITCONV_HEADLINE_QUANT="$quant" \
  cargo test --release --quiet --test it headline_3b -- --ignored --nocapture 2>&1 \
  | grep -v "^running\|^test \|^$" \
  | grep -E -v "^\s+(Command being timed|User time|System time|Percent of CPU|Average|Major|Minor|Voluntary|Involuntary|Swaps|File system|Socket|Signals|Page size|Exit status)"
