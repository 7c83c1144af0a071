#!/usr/bin/env bash
# Conversion speed of `bitconv convert` to every output type, beside the disk's own speed
# measured in the same run, on a random checkpoint with bitnet_b1_58-large's shapes (24 layers,
# 0.7B parameters, fp32, 2.92 GB; the bundled tiny tokenizer stands in). Needs python3 with numpy,
# dd and /usr/bin/time.
#
#   benches/convert_speed.sh [WORKDIR] [REPS] [THREADS] [TYPE...]
#
# Defaults: target/bench, 3 repetitions, 2 threads, every type (i2_s tl1 tl2 tq1_0 tq2_0 f16 f32).
# BITCONV_BIN=path times another build (an older commit's binary, for a before/after).
#
# 1. The disk: the checkpoint read with O_DIRECT (`dd iflag=direct`, bypassing the page cache:
#    the cold read speed), a 2 GiB sequential write flushed to the device (`dd conv=fdatasync`),
#    and what writing an f32 output's 2.92 GB into the page cache costs dd (wall, sys seconds).
# 2. The checkpoint is read once into the page cache, then every type is converted REPS times,
#    the types alternated within each repetition (so a slow spell of this shared machine does not
#    fall on one type). Each output is removed after its run, outside the timing (a rename over an
#    existing multi-GB file would charge freeing it to the next run).
# 3. The disk again, since its speed swings on a shared VM.
#
# Per run: wall seconds, user + sys CPU seconds, peak RSS, output size; per type: the best run's
# wall and its input GB/s, every run's wall, and the CPU-bound rate input / ((user + sys) /
# THREADS): the rate the conversion would reach with THREADS cores to itself, which stays
# meaningful when other jobs load the machine. The load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
reps=${2:-3}
threads=${3:-2}
shift $(($# < 3 ? $# : 3))
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(i2_s tl1 tl2 tq1_0 tq2_0 f16 f32)
ck="$work/bitnet_b1_58-large"
mkdir -p "$work"
if [ ! -f "$ck/model.safetensors" ]; then
  python3 benches/make_checkpoint.py "$ck" --shape large --dtype f32
fi
cp tests/data/tiny/ckpt-fp32/tokenizer.model tests/data/tiny/ckpt-fp32/tokenizer_config.json "$ck/"
bin=${BITCONV_BIN:-target/release/bitconv}
[ -n "${BITCONV_BIN:-}" ] || cargo build --release --quiet
in_bytes=$(stat -c %s "$ck/model.safetensors")

# dd's summary line ("N bytes (...) copied, T s, R GB/s") as GB/s.
dd_rate() {
  python3 -c '
import re, sys
m = re.search(r"^(\d+) bytes.*copied, ([\d.]+) s", sys.stdin.read(), re.M)
print(f"{int(m.group(1)) / float(m.group(2)) / 1e9:.2f}")'
}
disk() {
  local r w
  r=$(dd if="$ck/model.safetensors" of=/dev/null bs=16M iflag=direct 2>&1 | dd_rate)
  w=$(dd if=/dev/zero of="$work/dd-write.tmp" bs=16M count=128 conv=fdatasync 2>&1 | dd_rate)
  rm -f "$work/dd-write.tmp"
  # What the kernel alone charges for putting an f32 output's bytes in the page cache (no
  # sync): dd's own CPU seconds, to set beside bitconv's sys time for f16/f32.
  /usr/bin/time -f "%e %S" -o "$work/dd-t.txt" \
    dd if=/dev/zero of="$work/dd-write.tmp" bs=4M count=696 2> /dev/null
  read -r pw ps < "$work/dd-t.txt"
  rm -f "$work/dd-write.tmp"
  echo "disk ($1): cold read (O_DIRECT) of the checkpoint $r GB/s; sequential write (2 GiB, fdatasync) $w GB/s;" \
    "2.92 GB into the page cache (dd, no sync) ${pw} s wall, ${ps} s sys"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
disk before
cat "$ck/model.safetensors" > /dev/null
runs="$work/convert_speed.runs"
: > "$runs"
for r in $(seq "$reps"); do
  for q in "${types[@]}"; do
    out="$work/speed-$q.gguf"
    /usr/bin/time -f "%e %U %S %M" -o "$work/t.txt" \
      "$bin" convert "$ck" --quant "$q" -o "$out" --quiet -t "$threads" > "$work/out.txt" \
      || { cat "$work/out.txt" "$work/t.txt"; exit 1; }
    read -r wall user sys kb < "$work/t.txt"
    size=$(stat -c %s "$out")
    rm -f "$out"
    echo "$q $r $wall $user $sys $kb $size $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$runs" \
      | awk '{printf "%-6s run %s: %6.2f s wall, %5.2f s user + %5.2f s sys, peak RSS %4d MB, output %7.1f MB, load %s\n", $1, $2, $3, $4, $5, $6/1024, $7/1e6, $8}'
  done
done
disk after
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$runs" "$in_bytes" "$threads" "${types[@]}" <<'PY'
import sys, statistics as st
path, n, threads, types = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rows = [l.split() for l in open(path)]
print(f"input {n / 1e9:.2f} GB fp32, {threads} threads, best of {max(int(r[1]) for r in rows)}:")
print("type   | best wall | input GB/s | all walls (s)        | CPU user+sys (median) | CPU-bound GB/s | peak RSS | output")
for q in types:
    rs = [r for r in rows if r[0] == q]
    walls = [float(r[2]) for r in rs]
    cpu = st.median(float(r[3]) + float(r[4]) for r in rs)
    rss = max(int(r[5]) for r in rs) / 1024
    size = int(rs[0][6]) / 1e6
    best = min(walls)
    print(f"{q:<6} | {best:7.2f} s | {n / best / 1e9:10.2f} | {' '.join(f'{w:.2f}' for w in walls):<20} | "
          f"{cpu:19.2f} s | {n / (cpu / threads) / 1e9:14.2f} | {rss:5.0f} MB | {size:.0f} MB")
PY
