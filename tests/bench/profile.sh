#!/bin/sh
# make profile: where a steady-state training step of the toy model goes, by perf
# (docs/performance.md, "Where a step goes").
#
#   tests/bench/profile.sh            (make profile builds the bench binary first)
#
# Environment:
#   PROFILE_SCHEME    a --pos choice of examples/train_lm, default rotary
#   PROFILE_STEPS     timed steps, default 60
#   PROFILE_THREADS   default 1
#   PROFILE_DTYPE     f32 (default) or f64
#   PROFILE_TOP       how many of the other functions to list, default 20
#   BENCH, PROFILE_DATA  the bench binary (build/tests/bench), perf's file (build/profile.data)
#
# `bench --steps` runs three warm-up steps, prints `steady_from` (CLOCK_MONOTONIC seconds)
# and then the timed steps; perf samples on the same clock, so `perf report --time` keeps
# the timed steps alone (the model's set-up, first-touch page faults and warm-up left out).
# Functions are counted as:
#   gemm_kernels    the GEMM's micro-kernels (tensor/gemm.c ks_*, kp_*, and ks2_*, kp2_* for two slivers)
#   gemm_packing    its packing copies (pack_rows_*, pack_cols_*, pack_cols_vec_*, plan_packing)
#   gemm_driver     its loops around them (pg_gemm_*, gemm_run_*, gemm_range_*, gemm_slice_*,
#                   gemm_halves_slice_*, block_f32 / block_f64)
#   attn_products   the attention kernel's tile products (autograd/flash_kernels.h gemm_acc and
#                   its register blocks, acc_block / op_flash.c acc_block_vec, acc_quad_vec,
#                   acc_pair_vec)
#   non_gemm        everything else (the kernel's samples too): listed, largest first
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BENCH=${BENCH:-$root/build/tests/bench}
DATA=${PROFILE_DATA:-$root/build/profile.data}
SCHEME=${PROFILE_SCHEME:-rotary}
STEPS=${PROFILE_STEPS:-60}
THREADS=${PROFILE_THREADS:-1}
DTYPE=${PROFILE_DTYPE:-f32}
TOP=${PROFILE_TOP:-20}

if [ ! -x "$BENCH" ]; then
    echo "profile: $BENCH is missing: run make profile (or make $BENCH)" >&2
    exit 1
fi
case "$TOP" in '' | *[!0-9]*) echo "profile: PROFILE_TOP must be a non-negative integer" >&2; exit 2 ;; esac
"$root/tests/need.sh" --command perf linux-perf || exit 1

out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! perf record -q -o "$out" -- true >/dev/null 2>&1; then
    echo "profile: perf cannot record here (it needs kernel.perf_event_paranoid <= 2, or root)" >&2
    exit 1
fi
# -k CLOCK_MONOTONIC: sample times on the clock of steady_from
if ! perf record -q -k CLOCK_MONOTONIC -F 2000 -o "$DATA" -- \
    "$BENCH" --steps "$SCHEME" "$STEPS" "$THREADS" "$DTYPE" >"$out"; then
    cat "$out"
    echo "profile: $BENCH --steps $SCHEME $STEPS $THREADS $DTYPE failed (its message is above)" >&2
    exit 1
fi
from=$(awk '$1 == "steady_from" {print $2}' "$out")
if [ -z "$from" ]; then
    cat "$out"
    echo "profile: no steady_from line from $BENCH" >&2
    exit 1
fi
tag="${SCHEME}_t${THREADS}"
[ "$DTYPE" = f64 ] && tag="${SCHEME}_f64_t${THREADS}"

echo "# where a steady-state step goes: $BENCH --steps $SCHEME $STEPS $THREADS $DTYPE"
echo "# machine: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(nproc) cores; perf samples from $from s"
grep -v '^steady_from' "$out"
# perf's own columns: overhead, then [.] or [k], then the symbol; a compiler's clone
# (foo.constprop.0, foo.isra.0, foo.part.0) counts as foo
perf report -i "$DATA" --time "$from," --no-children --sort symbol --stdio --percent-limit 0 2>/dev/null |
    awk -v tag="$tag" -v top="$TOP" '
    /^#/ || NF < 3 || $1 !~ /%$/ { next }
    {
        p = substr($1, 1, length($1) - 1) + 0
        s = $3
        sub(/\.(constprop|isra|part|cold)\..*$/, "", s)
        if (s ~ /^k[sp]2?_f(32|64)_/) cls = "gemm_kernels"
        else if (s ~ /^pack_(rows|cols|cols_vec)_f(32|64)/ || s ~ /^plan_packing/) cls = "gemm_packing"
        else if (s ~ /^(pg_gemm_f|pg_gemm_bias_f|gemm_run_f|gemm_range_f|gemm_slice_f|gemm_halves_slice_f|block_f)(32|64)$/)
            cls = "gemm_driver"
        else if (s ~ /^(gemm_acc|acc_block|acc_block_vec|acc_quad_vec|acc_pair_vec)_f(32|64)$/) cls = "attn_products"
        else { cls = "other"; other[s] += p }
        share[cls] += p
        total += p
    }
    END {
        if (total <= 0) { print "profile: perf recorded no samples after steady_from" > "/dev/stderr"; exit 1 }
        n = split("gemm_kernels gemm_packing gemm_driver attn_products", order, " ")
        for (i = 1; i <= n; i++)
            printf "profile_%s_%s %.1f %%\n", tag, order[i], 100 * share[order[i]] / total
        printf "profile_%s_non_gemm %.1f %%\n", tag, 100 * share["other"] / total
        printf "# the largest of the other functions (%% of the step):\n"
        for (k = 0; k < top; k++) {
            best = ""
            for (s in other) if (best == "" || other[s] > other[best]) best = s
            if (best == "") break
            printf "#   %6.2f  %s\n", 100 * other[best] / total, best
            delete other[best]
        }
    }'
