#!/usr/bin/env bash
# The end-to-end speed table of the README: `bitconv bench` (2 threads, pp128 and tg32 as in
# PERFORMANCE.md's bitnet.cpp figures, 5 repetitions) on the 125M dummy model and on a 0.7B
# model with bitnet_b1_58-large's shapes, as I2_S, TL2 and TQ2_0:
#   * the dummies of `bitconv dummy` (TL2 with an F32 embedding, as bitnet.cpp's generator);
#   * one random checkpoint (benches/make_checkpoint.py) converted to every type with an F16
#     embedding (`--quant-embd` for TL2), i.e. the same model in three layouts.
# Each run measures the read bandwidth too, so each row has its own bound. I2_S rows also run the
# scalar reference (`--baseline reference`) for the speed-up, and the dummy I2_S files once more
# with `--mmap` (weights read in place from the file mapping instead of the resident copy).
# Then each model's three files alternated in one process (`--against`), for the ratios to I2_S.
#
#   benches/e2e_table.sh [WORKDIR]      (python3 with numpy; about 4 GB of disk)
#
# Set QUIET_LOAD=1.0 to wait until the 1-minute load average is below that before each run (a
# shared machine gives meaningless numbers while other jobs run).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench-e2e}
mkdir -p "$work"
cargo build --release --quiet
b=target/release/bitconv

model() { # dir quant size-args...
  local dir=$1 q=$2; shift 2
  mkdir -p "$work/$dir"
  if [ ! -f "$work/$dir/model.gguf" ]; then
    local extra=()
    [ "$q" = tl2 ] && extra=(--emit-kernel-config "$work/$dir/kernel_config.ini")
    $b dummy "$@" --quant "$q" -o "$work/$dir/model.gguf" -q "${extra[@]}"
  fi
}
large=(--size custom --hidden 1536 --intermediate 4096 --layers 24 --heads 16)
for q in i2_s tl2 tq2_0; do
  model "dummy-125M-$q" "$q" --size 125M
  model "dummy-0.7B-$q" "$q" "${large[@]}"
done
for s in 125M large; do
  ck="$work/ckpt-$s"
  if [ ! -f "$ck/model.safetensors" ]; then
    python3 benches/make_checkpoint.py "$ck" --shape "$s" --dtype f16
    cp tests/data/tiny/ckpt-fp16/tokenizer.model tests/data/tiny/ckpt-fp16/tokenizer_config.json "$ck/"
  fi
  name=$([ "$s" = large ] && echo 0.7B || echo 125M)
  for q in i2_s tl2 tq2_0; do
    dir="$work/conv-$name-$q"
    mkdir -p "$dir"
    if [ ! -f "$dir/model.gguf" ]; then
      extra=()
      [ "$q" = tl2 ] && extra=(--quant-embd --emit-kernel-config "$dir/kernel_config.ini")
      $b convert "$ck" --quant "$q" -o "$dir/model.gguf" -q "${extra[@]}"
    fi
  done
done

wait_quiet() {
  [ -z "${QUIET_LOAD:-}" ] && return
  while awk -v lim="$QUIET_LOAD" '{exit !($1 >= lim)}' /proc/loadavg; do sleep 20; done
}

runs=()
for size in 125M 0.7B; do
  for kind in dummy conv; do
    for q in i2_s tl2 tq2_0; do
      dir="$work/$kind-$size-$q"
      base=()
      [ "$q" = i2_s ] && base=(--baseline reference)
      wait_quiet
      echo "load $(cut -d' ' -f1 /proc/loadavg): $dir" >&2
      $b bench "$dir/model.gguf" -p 128 -n 32 -t 2 -r 5 "${base[@]}" --json > "$dir/bench.json"
      runs+=("$dir/bench.json")
      if [ "$q" = i2_s ] && [ "$kind" = dummy ]; then
        # The same file read in place from the mapping, for the resident copy's gain.
        wait_quiet
        $b bench "$dir/model.gguf" -p 128 -n 32 -t 2 -r 5 --mmap --json > "$dir/bench-mmap.json"
        runs+=("$dir/bench-mmap.json")
      fi
    done
  done
done

# The three layouts of each model alternated in one process (`bench --against`): their ratios
# to I2_S, which separate runs on a drifting machine cannot give. Ten repetitions: with five,
# TL2 (the same kernels as I2_S) came out between 0.85 and 1.07 of I2_S on one Zen 3 day.
alts=()
for size in 125M 0.7B; do
  for kind in dummy conv; do
    d="$work/$kind-$size"
    wait_quiet
    echo "load $(cut -d' ' -f1 /proc/loadavg): $d alternated" >&2
    $b bench "$d-i2_s/model.gguf" --against "$d-tl2/model.gguf" --against "$d-tq2_0/model.gguf" \
      -p 128 -n 32 -t 2 -r 10 --bandwidth-mib 0 --json > "$d-alternated.json"
    alts+=("$d-alternated.json")
  done
done

python3 - "${runs[@]}" <<'PY'
import json, sys
print("| model | type | embedding | kernel | pp128 tokens/s | tg32 tokens/s | weights read at | bound | tg % of bound | vs scalar (pp, tg) |")
print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for path in sys.argv[1:]:
    d = json.load(open(path))
    parts = path.split("/")[-2].split("-")
    kind, size, q = parts[0], parts[1], "-".join(parts[2:])
    r = d["results"][0]
    emb = "F32" if "head F32" in d["model"] else "F16"
    label = q.upper() + (" --mmap" if d.get("weights_memory") == "mapped" else "")
    ref = ""
    if len(d["results"]) > 1:
        s = d["results"][1]
        ref = f"{r['pp']['mean'] / s['pp']['mean']:.1f}x, {r['tg']['mean'] / s['tg']['mean']:.1f}x"
    print(f"| {size} ({kind}) | {label} | {emb} | {r['kernel']} | {r['pp']['mean']:.0f} ± {r['pp']['sd']:.0f} "
          f"| {r['tg']['mean']:.1f} ± {r['tg']['sd']:.1f} | {d['weights_read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s | {d['tg_bound_tokens_per_s']:.0f} "
          f"| {r['tg_percent_of_bound']:.0f}% | {ref} |")
PY

echo
python3 - "${alts[@]}" <<'PY'
import json, sys
print("| model | TL2 / I2_S pp128 | TL2 / I2_S tg32 | TQ2_0 / I2_S pp128 | TQ2_0 / I2_S tg32 |")
print("| --- | ---: | ---: | ---: | ---: |")
for path in sys.argv[1:]:
    a = json.load(open(path))["alternated"]
    kind, size = path.split("/")[-1].split("-")[:2]
    print(f"| {size} ({kind}) | {a[1]['pp_ratio']:.3f} | {a[1]['tg_ratio']:.3f} | {a[2]['pp_ratio']:.3f} | {a[2]['tg_ratio']:.3f} |")
PY
