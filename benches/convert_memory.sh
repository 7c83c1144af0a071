#!/usr/bin/env bash
# Peak memory and speed of `bitconv convert` on a checkpoint with bitnet_b1_58-large's shapes
# (0.7B parameters, fp32, about 2.9 GB), to I2_S. Needs python3 with numpy and /usr/bin/time.
#
#   benches/convert_memory.sh [WORKDIR]
#
# Prints the peak resident set size, the wall time and the input bytes per second.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
ck="$work/bitnet_b1_58-large"
mkdir -p "$work"
if [ ! -f "$ck/model.safetensors" ]; then
  python3 benches/make_checkpoint.py "$ck" --shape large --dtype f32
fi
# The tokenizer of the bundled tiny model stands in (vocab padded by the converter).
cp tests/data/tiny/ckpt-fp32/tokenizer.model tests/data/tiny/ckpt-fp32/tokenizer_config.json "$ck/"
cargo build --release --quiet
in_bytes=$(stat -c %s "$ck/model.safetensors")
# Warm the page cache once so the figure measures conversion, not the disk.
cat "$ck/model.safetensors" > /dev/null
/usr/bin/time -v target/release/bitconv convert "$ck" --quant i2_s -o "$work/large-i2_s.gguf" --quiet \
  2> "$work/time.txt"
rss_kb=$(grep "Maximum resident set size" "$work/time.txt" | awk '{print $NF}')
wall=$(grep "Elapsed (wall clock)" "$work/time.txt" | awk '{print $NF}')
secs=$(python3 -c "import sys; p=sys.argv[1].split(':'); print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))" "$wall")
python3 - "$rss_kb" "$secs" "$in_bytes" <<'PY'
import sys
rss, secs, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"input {n/1e9:.2f} GB fp32; peak RSS {rss/1024:.0f} MB; wall {secs:.2f} s; {n/secs/1e9:.2f} GB/s of input")
PY
