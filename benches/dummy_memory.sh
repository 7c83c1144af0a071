#!/usr/bin/env bash
# Peak memory of `bitconv dummy` for 125M and 7B (I2_S), and the 7B write speed against the
# disk's sequential write speed measured the same way in the same run (both timed until the data
# is on disk: dd with conv=fdatasync, bitconv followed by sync). The disk figure of a shared VM
# swings from run to run, so RUNS > 1 repeats the dd / bitconv pair and prints every run.
#
#   benches/dummy_memory.sh [WORKDIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
runs=${2:-1}
mkdir -p "$work"
cargo build --release --quiet
bin=target/release/bitconv

rss() { grep "Maximum resident set size" "$1" | awk '{print $NF}'; }

/usr/bin/time -v $bin dummy --size 125M --quant i2_s -o "$work/d125M.gguf" -q 2> "$work/time125.txt" >/dev/null
rm -f "$work/d125M.gguf"

for run in $(seq 1 "$runs"); do
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
  python3 - "$run" "$(rss "$work/time125.txt")" "$work/time7.txt" "$size" "$t0" "$t1" "$disk" <<'PY'
import re, sys
run, r125, t7, size, t0, t1, disk = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read(), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
def field(name):
    return re.search(re.escape(name) + r".*: (.*)", t7).group(1)
r7 = int(field("Maximum resident set size"))
wall = field("Elapsed (wall clock) time")
m, s = wall.split(":")[-2:]
wall = 60 * float(m) + float(s)
speed = size / (t1 - t0) / 1e9
if run == 1:
    print(f"peak RSS: 125M {r125/1024:.0f} MB, 7B {r7/1024:.0f} MB (difference {abs(r7-r125)/1024:.0f} MB)")
print(f"run {run}: 7B I2_S: {size/1e9:.2f} GB in {t1-t0:.2f} s to disk = {speed:.2f} GB/s; disk sequential write (dd, fdatasync) {disk:.2f} GB/s; ratio {speed/disk:.0%}"
      f" (bitconv alone {wall:.2f} s wall, {float(field('User time')):.2f} s user, {float(field('System time')):.2f} s sys)")
PY
done
