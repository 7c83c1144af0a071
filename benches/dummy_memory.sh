#!/usr/bin/env bash
# Peak memory of `bitconv dummy` for 125M and 7B (I2_S), and the 7B write speed against the
# disk's sequential write speed measured the same way in the same run (both timed until the data
# is on disk: dd with conv=fdatasync, bitconv followed by sync).
#
#   benches/dummy_memory.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
mkdir -p "$work"
cargo build --release --quiet
bin=target/release/bitconv

rss() { grep "Maximum resident set size" "$1" | awk '{print $NF}'; }

/usr/bin/time -v $bin dummy --size 125M --quant i2_s -o "$work/d125M.gguf" -q 2> "$work/time125.txt" >/dev/null
rm -f "$work/d125M.gguf"

# The disk: 2 GiB sequential, until on disk.
sync
t0=$(date +%s.%N)
dd if=/dev/zero of="$work/dd.bin" bs=1M count=2048 conv=fdatasync status=none
t1=$(date +%s.%N)
rm -f "$work/dd.bin"
disk=$(python3 -c "print(2048*1048576/($t1-$t0)/1e9)")

sync
t0=$(date +%s.%N)
/usr/bin/time -v $bin dummy --size 7B --quant i2_s -o "$work/d7B.gguf" -q 2> "$work/time7.txt" >/dev/null
sync
t1=$(date +%s.%N)
size=$(stat -c %s "$work/d7B.gguf")
rm -f "$work/d7B.gguf"
python3 - "$(rss "$work/time125.txt")" "$(rss "$work/time7.txt")" "$size" "$t0" "$t1" "$disk" <<'PY'
import sys
r125, r7, size, t0, t1, disk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
speed = size / (t1 - t0) / 1e9
print(f"peak RSS: 125M {r125/1024:.0f} MB, 7B {r7/1024:.0f} MB (difference {abs(r7-r125)/1024:.0f} MB)")
print(f"7B I2_S: {size/1e9:.2f} GB in {t1-t0:.1f} s to disk = {speed:.2f} GB/s; disk sequential write (dd, fdatasync) {disk:.2f} GB/s; ratio {speed/disk:.0%}")
PY
