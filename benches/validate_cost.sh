#!/usr/bin/env bash
# What validation costs beside the conversion it checks, on a random checkpoint with
# bitnet_b1_58-large's shapes (24 layers, 0.7B, fp32, 2.9 GB; the bundled tiny tokenizer stands
# in). For i2_s and tl2, alternately: `convert` alone, then `convert --validate` (the independent
# golden from the checkpoint, then the block-by-block check), REPS times each, in the page cache.
# Needs python3 with numpy and /usr/bin/time.
#
#   benches/validate_cost.sh [WORKDIR] [REPS]
#
# Prints, per run, wall seconds and peak RSS, then the median ratio validate-run / convert-run.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
reps=${2:-3}
ck="$work/bitnet_b1_58-large"
mkdir -p "$work"
if [ ! -f "$ck/model.safetensors" ]; then
  python3 benches/make_checkpoint.py "$ck" --shape large --dtype f32
fi
for f in tokenizer.json tokenizer.model tokenizer_config.json special_tokens_map.json; do
  cp "tests/data/tiny/ckpt-fp16/$f" "$ck/"
done
cargo build --release --quiet
cat "$ck/model.safetensors" > /dev/null
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for q in i2_s tl2; do
  conv=(); val=()
  for r in $(seq "$reps"); do
    for mode in plain validate; do
      args=(convert "$ck" --quant "$q" -o "$work/large-$q.gguf" --quiet)
      [ "$mode" = validate ] && args+=(--validate)
      /usr/bin/time -f "%e %M" -o "$work/t.txt" target/release/bitconv "${args[@]}" > "$work/out.txt" \
        || { cat "$work/out.txt"; exit 1; }
      read -r secs kb < "$work/t.txt"
      echo "$q $mode run $r: ${secs} s, peak RSS $((kb / 1024)) MB"
      if [ "$mode" = plain ]; then conv+=("$secs"); else val+=("$secs"); fi
    done
  done
  python3 - "$q" "${conv[*]}" "${val[*]}" <<'PY'
import sys, statistics as st
q, c, v = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
print(f"{q}: convert median {st.median(c):.2f} s; convert --validate median {st.median(v):.2f} s; "
      f"validation alone {st.median(v) - st.median(c):.2f} s = {(st.median(v) - st.median(c)) / st.median(c):.1f}x the conversion")
PY
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
