#!/usr/bin/env bash
# bitconv against its peers on the same files: `bitconv bench` and a peer's `llama-bench`
# alternated row by row (peer, bitconv, then bitconv, peer, ...: ROUNDS processes of each, every
# other round in reverse order, so that neither always runs first), the table of issue #21:
#   * I2_S against bitnet.cpp: 125M (pp128 / tg32) and 0.7B (bitnet_b1_58-large's shapes, pp128 /
#     tg64 and pp512) at 2 threads and 1 thread, 3B (bitnet_b1_58-3B's shapes) at 2 threads;
#   * TQ2_0 and TQ1_0 against mainline llama.cpp: 0.7B, pp128 / tg64, 2 threads and 1 thread.
# The models are `bitconv dummy` files (random weights, real shapes), made once in WORKDIR/models.
# Both programs measure their own rates (tokens/s, after a warm-up run): each process's mean over
# REPS repetitions, then over the ROUNDS processes the best (STAT=best, the default: a shared
# machine only ever slows a run down) or the median (STAT=median). The ratio is bitconv / peer.
#
#   benches/peers.sh [WORKDIR [BITNET_LLAMA_BENCH]]
#
# WORKDIR defaults to target/bench-peers. Each run writes WORKDIR/runs/DATE/: table.md (the table
# printed at the end), measurements.tsv (one line per process and test: rates, 1-minute load at
# its start) and raw/ (every program's own JSON and stderr).
#
# Peers:
#   * mainline llama.cpp: the llama.cpp vendored in llama-cpp-python's source distribution on PyPI
#     (version pinned below), downloaded with pip and built once (llama-bench only: Release,
#     -march=native, static ggml, no curl/OpenSSL) into PEERS_CACHE, by default
#     ~/.cache/bitconv/peers (a 74 MB download, 470 MB with the sources, the build and the venv;
#     the build took 35 minutes on 2 vCPUs shared with other builds). cmake and ninja come from
#     PyPI into PEERS_CACHE/venv unless on PATH.
#     LLAMA_BENCH=/path/to/llama-bench uses another build instead.
#   * bitnet.cpp: only a path to its llama-bench, the second argument or BITNET_LLAMA_BENCH (this
#     script builds nothing from GitHub). Without it the I2_S rows still measure bitconv and say
#     "bitnet.cpp: not given". The I2_S files are written for BITNET_TARGET (bitnet-cpp, the
#     default: bitnet.cpp as of 2026; bitnet-cpp-2024 for a build of its 2024 release, e.g.
#     microsoft/BitNet 4645960 with its llama.cpp fork at 406a503). Files for one target are kept
#     apart from the other's.
#
# Environment: ROUNDS (3), REPS (3: `-r` of both programs), STAT (best|median), ONLY (a regular
# expression on row ids, e.g. ONLY='^tq' for the mainline rows), QUIET_LOAD=x (wait until the
# 1-minute load average is below x before each process, as e2e_table.sh; QUIET_WAIT_MAX=seconds
# bounds each wait), RESUME=1 (continue the latest run in WORKDIR/runs: the processes already
# measured are not run again). A busy machine hurts the peers more than bitconv: ggml's threads
# spin at their barriers, so with more runnable processes than cores a 2-thread llama-bench can
# run several times slower than a 1-thread one. Read the load column.
#
# Needs: python3 with pip (no packages), a C/C++ compiler (gcc or clang), tar, and about 1.8 GB
# of disk in WORKDIR for the models (I2_S 125M 0.08 GB, 0.7B 0.27 GB, 3B 0.92 GB; 0.7B TQ2_0
# 0.28 GB, TQ1_0 0.24 GB). The 11 rows with ROUNDS=2 took 38 minutes on 2 vCPUs loaded by other
# work (the 2-thread peer processes were the slow part).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench-peers}")
bitnet_bench=${2:-${BITNET_LLAMA_BENCH:-}}
rounds=${ROUNDS:-3}
reps=${REPS:-3}
stat=${STAT:-best}
only=${ONLY:-}
bitnet_target=${BITNET_TARGET:-bitnet-cpp}
cache=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bitconv/peers}
# llama-cpp-python 0.3.36 vendors llama.cpp 0c1e570 (ggml 0.25.3).
lcp_version=0.3.36

case $stat in best | median) ;; *) echo "STAT must be best or median" >&2; exit 2 ;; esac
case $bitnet_target in bitnet-cpp | bitnet-cpp-2024) ;; *)
  echo "BITNET_TARGET must be bitnet-cpp or bitnet-cpp-2024" >&2; exit 2 ;;
esac
if [ -n "$bitnet_bench" ]; then
  bitnet_bench=$(realpath "$bitnet_bench")
  [ -x "$bitnet_bench" ] || { echo "not an executable: $bitnet_bench" >&2; exit 2; }
fi

log() { echo "peers: $*" >&2; }

# --- mainline llama.cpp's llama-bench, built once from the PyPI source distribution ---------
build_mainline() {
  local src="$cache/llama_cpp_python-$lcp_version" bin
  bin="$src/build/bin/llama-bench"
  if [ -x "$bin" ]; then
    echo "$bin"
    return
  fi
  mkdir -p "$cache/dl"
  local sdist="$cache/dl/llama_cpp_python-$lcp_version.tar.gz"
  if [ ! -f "$sdist" ]; then
    log "downloading llama-cpp-python $lcp_version (source distribution) from PyPI"
    # `--no-binary llama-cpp-python`, not `:all:`: the latter would also build the metadata
    # step's own tools (cmake) from source.
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$lcp_version" -d "$cache/dl" >&2
  fi
  if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
    tar -xzf "$sdist" -C "$cache"
  fi
  local cmake ninja gen=()
  cmake=$(command -v cmake || true)
  ninja=$(command -v ninja || true)
  if [ -z "$cmake" ] || [ -z "$ninja" ]; then
    if [ ! -x "$cache/venv/bin/cmake" ] || [ ! -x "$cache/venv/bin/ninja" ]; then
      log "installing cmake and ninja from PyPI into $cache/venv"
      python3 -m venv "$cache/venv"
      "$cache/venv/bin/pip" install --quiet cmake ninja >&2
    fi
    [ -n "$cmake" ] || cmake=$cache/venv/bin/cmake
    [ -n "$ninja" ] || ninja=$cache/venv/bin/ninja
  fi
  gen=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$ninja")
  log "building mainline llama-bench in $src/build (once; takes a while)"
  "$cmake" -S "$src/vendor/llama.cpp" -B "$src/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON >"$src/configure.log" 2>&1 \
    || { log "configure failed, see $src/configure.log"; exit 1; }
  "$cmake" --build "$src/build" --target llama-bench -j "$(nproc)" >"$src/build.log" 2>&1 \
    || { log "build failed, see $src/build.log"; exit 1; }
  echo "$bin"
}

mainline_bench=${LLAMA_BENCH:-}
cached="$cache/llama_cpp_python-$lcp_version/build/bin/llama-bench"
if [ -z "$mainline_bench" ] && [ -x "$cached" ]; then
  mainline_bench=$cached
elif [ -z "$mainline_bench" ] && [ -n "$(printf 'tq2_0-0.7B-t2\ntq1_0-0.7B-t2\ntq2_0-0.7B-t1\ntq1_0-0.7B-t1\n' | grep -E -- "${only:-.}" || true)" ]; then
  mainline_bench=$(build_mainline)
fi

cargo build --release --quiet
b=$PWD/target/release/bitconv

# --- the models ------------------------------------------------------------------------------
mkdir -p "$work/models"
model() { # name quant target size-args...
  local f="$work/models/$1.gguf" q=$2 t=$3
  shift 3
  if [ ! -f "$f" ]; then
    log "making $f"
    "$b" dummy "$@" --quant "$q" --target "$t" -o "$f.part" -q >&2
    mv "$f.part" "$f"
  fi
  echo "$f"
}
large=(--size custom --hidden 1536 --intermediate 4096 --layers 24 --heads 16)

# id | model | peer | -p | -n | threads
rows=(
  "i2_s-125M-t2|i2_s-125M|bitnet|128|32|2"
  "i2_s-125M-t1|i2_s-125M|bitnet|128|32|1"
  "i2_s-0.7B-t2|i2_s-0.7B|bitnet|128|64|2"
  "i2_s-0.7B-t1|i2_s-0.7B|bitnet|128|64|1"
  "i2_s-0.7B-pp512-t2|i2_s-0.7B|bitnet|512|0|2"
  "i2_s-0.7B-pp512-t1|i2_s-0.7B|bitnet|512|0|1"
  "i2_s-3B-t2|i2_s-3B|bitnet|128|64|2"
  "tq2_0-0.7B-t2|tq2_0-0.7B|mainline|128|64|2"
  "tq1_0-0.7B-t2|tq1_0-0.7B|mainline|128|64|2"
  "tq2_0-0.7B-t1|tq2_0-0.7B|mainline|128|64|1"
  "tq1_0-0.7B-t1|tq1_0-0.7B|mainline|128|64|1"
)
declare -A file
for r in "${rows[@]}"; do
  IFS='|' read -r id m _ <<<"$r"
  [ -n "$only" ] && ! grep -Eq -- "$only" <<<"$id" && continue
  [ -n "${file[$m]:-}" ] && continue
  case $m in
    i2_s-125M) file[$m]=$(model "i2_s-125M-$bitnet_target" i2_s "$bitnet_target" --size 125M) ;;
    i2_s-0.7B) file[$m]=$(model "i2_s-0.7B-$bitnet_target" i2_s "$bitnet_target" "${large[@]}") ;;
    i2_s-3B) file[$m]=$(model "i2_s-3B-$bitnet_target" i2_s "$bitnet_target" --size 3B) ;;
    tq2_0-0.7B) file[$m]=$(model tq2_0-0.7B tq2_0 llama-cpp "${large[@]}") ;;
    tq1_0-0.7B) file[$m]=$(model tq1_0-0.7B tq1_0 llama-cpp "${large[@]}") ;;
  esac
done

# --- the measurements ------------------------------------------------------------------------
mkdir -p "$work/runs"
run=""
if [ -n "${RESUME:-}" ]; then
  run=$(find "$work/runs" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)
fi
[ -n "$run" ] || run="$work/runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$run/raw"
log "results in $run"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
  echo "cpus=$(nproc)"
  echo "flags=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "bitconv=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)"
  echo "mainline=${mainline_bench:-not built}"
  if [ -n "${LLAMA_BENCH:-}" ]; then echo "lcp=given by LLAMA_BENCH"; else
    echo "lcp=built from llama-cpp-python $lcp_version's sdist"; fi
  echo "bitnet=${bitnet_bench:-not given}"
  echo "target=$bitnet_target"
  echo "rounds=$rounds"
  echo "reps=$reps"
  echo "stat=$stat"
} >"$run/meta.txt"

wait_quiet() {
  [ -z "${QUIET_LOAD:-}" ] && return
  local waited=0
  while awk -v lim="$QUIET_LOAD" '{exit !($1 >= lim)}' /proc/loadavg; do
    if [ -n "${QUIET_WAIT_MAX:-}" ] && [ "$waited" -ge "$QUIET_WAIT_MAX" ]; then
      log "load still $(cut -d' ' -f1 /proc/loadavg) after ${waited}s, measuring anyway"
      return
    fi
    sleep 20
    waited=$((waited + 20))
  done
}

measure() { # id round who exe file p n t
  local id=$1 k=$2 who=$3 exe=$4 f=$5 p=$6 n=$7 t=$8
  local out="$run/raw/$id-r$k-$who"
  [ -s "$out.json" ] && return 0
  [ -z "$exe" ] && return 0
  wait_quiet
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$load" >"$out.load"
  log "load $load: $id round $k $who"
  local ok=0
  if [ "$who" = bitconv ]; then
    "$exe" bench "$f" -p "$p" -n "$n" -t "$t" -r "$reps" --bandwidth-mib 0 --json \
      >"$out.json.part" 2>"$out.err" || ok=$?
  else
    "$exe" -m "$f" -p "$p" -n "$n" -t "$t" -r "$reps" -o json \
      >"$out.json.part" 2>"$out.err" || ok=$?
  fi
  if [ "$ok" = 0 ]; then
    mv "$out.json.part" "$out.json"
  else
    log "$who failed on $id (exit $ok), see $out.err"
    mv "$out.json.part" "$out.failed"
  fi
}

for r in "${rows[@]}"; do
  IFS='|' read -r id m peer p n t <<<"$r"
  [ -n "$only" ] && ! grep -Eq -- "$only" <<<"$id" && continue
  pexe=$([ "$peer" = bitnet ] && echo "$bitnet_bench" || echo "$mainline_bench")
  for k in $(seq 1 "$rounds"); do
    if [ $((k % 2)) = 1 ]; then
      measure "$id" "$k" peer "$pexe" "${file[$m]}" "$p" "$n" "$t"
      measure "$id" "$k" bitconv "$b" "${file[$m]}" "$p" "$n" "$t"
    else
      measure "$id" "$k" bitconv "$b" "${file[$m]}" "$p" "$n" "$t"
      measure "$id" "$k" peer "$pexe" "${file[$m]}" "$p" "$n" "$t"
    fi
  done
  echo "$r" >>"$run/rows.txt"
done
sort -u -o "$run/rows.txt" "$run/rows.txt"

# --- the table -------------------------------------------------------------------------------
python3 - "$run" "$stat" "$rounds" <<'PY' | tee "$run/table.md"
import glob, json, os, statistics, sys

run, stat, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
meta = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(run, "meta.txt")))
order = [l.strip().split("|") for l in open(os.path.join(run, "rows.txt")) if l.strip()]
names = {"i2_s-125M": ("125M", "I2_S"), "i2_s-0.7B": ("0.7B", "I2_S"), "i2_s-3B": ("3B", "I2_S"),
         "tq2_0-0.7B": ("0.7B", "TQ2_0"), "tq1_0-0.7B": ("0.7B", "TQ1_0")}
rank = {r[0]: i for i, r in enumerate([
    ["i2_s-125M-t2"], ["i2_s-125M-t1"], ["i2_s-0.7B-t2"], ["i2_s-0.7B-t1"], ["i2_s-0.7B-pp512-t2"],
    ["i2_s-0.7B-pp512-t1"], ["i2_s-3B-t2"], ["tq2_0-0.7B-t2"], ["tq1_0-0.7B-t2"],
    ["tq2_0-0.7B-t1"], ["tq1_0-0.7B-t1"]])}
order.sort(key=lambda r: rank.get(r[0], 99))

def peer_rates(path):
    """llama-bench -o json: one object per test; pp has n_gen 0, tg has n_prompt 0."""
    out = {}
    for t in json.load(open(path)):
        key = "pp" if t["n_gen"] == 0 else "tg"
        out[key] = (t["avg_ts"], t["stddev_ts"])
    return out, {"build": t.get("build_commit"), "type": t.get("model_type")}

def bitconv_rates(path):
    d = json.load(open(path))
    r = d["results"][0]
    out = {k: (r[k]["mean"], r[k]["sd"]) for k in ("pp", "tg") if r.get(k)}
    return out, {"bound": d.get("tg_bound_tokens_per_s"), "pct": r.get("tg_percent_of_bound"),
                 "kernel": r.get("kernel")}

def pick(vals):
    return max(vals) if stat == "best" else statistics.median(vals)

def goal_for(peer, test, qt):
    """The issue's bars: bitnet.cpp 2x prompt, 1.5x generation; mainline 1.5x generation, and
    3x prompt for TQ2_0 (none for TQ1_0's prompt)."""
    if peer == "bitnet":
        return 2.0 if test == "pp" else 1.5
    if test == "tg":
        return 1.5
    return 3.0 if qt == "TQ2_0" else None

tsv = ["row\tround\tprogram\ttest\ttokens_per_s\tsd\tload1\tfile"]
lines = []
peer_build = {}
for rid, model, peer, p, n, t in order:
    size, qt = names[model]
    per = {"peer": {}, "bitconv": {}}
    loads, extra, failed = [], {}, {"peer": 0, "bitconv": 0}
    for who in ("peer", "bitconv"):
        for k in range(1, rounds + 1):
            base = os.path.join(run, "raw", f"{rid}-r{k}-{who}")
            if os.path.exists(base + ".failed"):
                failed[who] += 1
            if not os.path.exists(base + ".json"):
                continue
            load = float(open(base + ".load").read())
            loads.append(load)
            rates, info = (peer_rates if who == "peer" else bitconv_rates)(base + ".json")
            if who == "peer":
                peer_build[peer] = info
            for test, (mean, sd) in rates.items():
                per[who].setdefault(test, []).append((mean, info))
                tsv.append(f"{rid}\t{k}\t{who if who == 'bitconv' else peer}\t{test}\t{mean:.3f}\t{sd:.3f}\t{load}\t{base}.json")
    tests = [x for x in (("pp", int(p)), ("tg", int(n))) if x[1] > 0]
    for test, ntok in tests:
        work = f"{size} {qt} {test}{ntok}"
        pname = ("bitnet.cpp" if peer == "bitnet" else "llama.cpp") + f" ({qt})"
        pv = [v for v, _ in per["peer"].get(test, [])]
        bv = per["bitconv"].get(test, [])
        bval = pick([v for v, _ in bv]) if bv else None
        pct = ""
        if test == "tg" and bv:
            best = max(bv, key=lambda x: x[0]) if stat == "best" else None
            if best and best[1].get("pct") is not None:
                pct = f"{best[1]['pct']:.0f}% of {best[1]['bound']:.0f}"
            elif stat == "median":
                pcts = [i["pct"] for _, i in bv if i.get("pct") is not None]
                pct = f"{statistics.median(pcts):.0f}%" if pcts else ""
        goal = goal_for(peer, test, qt)
        if pv:
            pval = pick(pv)
            ratio = bval / pval if bval else None
            ptxt = f"{pval:.1f}"
            rtxt = f"{ratio:.2f}×" if ratio else "–"
            gtxt = "–" if goal is None else f"≥{goal:g}×: " + ("met" if ratio and ratio >= goal else "missed")
        else:
            if peer == "bitnet" and meta["bitnet"].startswith("not given"):
                ptxt = "bitnet.cpp: not given"
            elif failed["peer"]:
                ptxt = "peer failed (raw/*.err)"
            else:
                ptxt = "not measured"
            rtxt, gtxt = "–", ("–" if goal is None else f"≥{goal:g}×: no peer")
        btxt = f"{bval:.1f}" if bval is not None else ("failed" if failed["bitconv"] else "not measured")
        ltxt = f"{min(loads):.1f}–{max(loads):.1f}" if loads else ""
        lines.append(f"| {work} | {t} | {pname} | {ptxt} | {btxt} | {rtxt} | {gtxt} | {pct} | {ltxt} |")

open(os.path.join(run, "measurements.tsv"), "w").write("\n".join(tsv) + "\n")
print(f"{meta['date']}, {meta['cpu']} ({meta['cpus']} CPUs; {meta['flags'].strip()}), bitconv {meta['bitconv']}.")
mb = peer_build.get("mainline", {}).get("build") or "?"
bb = peer_build.get("bitnet", {}).get("build") or "?"
print(f"Peers: mainline llama.cpp {mb} ({meta['lcp']}), `{meta['mainline']}`; "
      + (f"bitnet.cpp {bb}, `{meta['bitnet']}`" if meta["bitnet"] != "not given" else "bitnet.cpp not given")
      + f"; I2_S files for `--target {meta['target']}`.")
print(f"Tokens/s: {stat} over {rounds} processes of each program alternated "
      f"(each process: mean of {meta['reps']} repetitions after a warm-up); "
      "ratio = bitconv / peer; load = 1-minute load average at the start of the row's processes.")
print()
print("| work | threads | peer | peer t/s | bitconv t/s | ratio | goal | bitconv tg, % of its bound (t/s) | load |")
print("| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |")
print("\n".join(lines))
PY
log "table: $run/table.md, measurements: $run/measurements.tsv"
