#!/bin/sh
# make bench-compare: posgrad's training step beside PyTorch's, and posgrad's GEMM
# beside OpenBLAS's, alternated in one run on one machine (docs/performance.md,
# "Comparing with PyTorch and OpenBLAS").
#
#   tests/bench/compare.sh            (make bench-compare builds what it needs first)
#
# Environment:
#   COMPARE_THREADS   thread counts, default "2" ("1 2": also the 2-thread / 1-thread ratios)
#   COMPARE_ROUNDS    alternated rounds per scheme, default 3 (each figure: median and range)
#   COMPARE_SCHEMES   schemes, default every --pos choice of examples/train_lm
#   COMPARE_BLAS      0: skip the OpenBLAS part
#   OPENBLAS_CORETYPE passed to OpenBLAS as set (SkylakeX: its AVX-512 kernels)
#   BENCH, PYTHON     the bench binary (build/tests/bench) and the Python (/usr/bin/python3)
#
# Each round first prints core_skew_round<r> (`bench core_skew`: the two cores' speed ratio
# at that moment; a 2-thread figure waits for the slower core) and
# stream_4096k_t2_over_t1_round<r> (`bench stream`: what the second thread adds to a
# memory-bound pass over 4 MiB arrays at that moment), then runs, per scheme and
# thread count, `bench train_<scheme>_t<T>` and then
# tests/bench/torch_train.py (OMP_WAIT_POLICY=PASSIVE, OPENBLAS_NUM_THREADS, jemalloc through
# LD_PRELOAD when libjemalloc2 is installed: torch_run below), each a warm-up step and the
# median of 7 timed steps.
# Without python3-torch it says so and prints posgrad's figures alone.
# The ratios between posgrad's own figures come twice: of the medians (<who>_t2_over_t1_<s>,
# <who>_f64_over_f32) and paired (..._paired: the median and range over the rounds of each
# round's ratio, its two figures taken a minute apart rather than across the whole run, so
# that a slow minute of a shared host falls on both or neither). With COMPARE_THREADS
# holding 1 and 2, each round also runs `bench --scaling <s> 40 2` (1 and 2 threads in one
# process, in turns of 5 steps a fraction of a second apart), and
# posgrad_t2_over_t1_interleaved_<s> is the median and range over the rounds of its ratio of
# medians, posgrad_t2_over_t1_blockwise_<s> the same of its median of the 8 turns' ratios
# (each turn's 1-thread median over the 2-thread median of the same turn).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BENCH=${BENCH:-$root/build/tests/bench}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${COMPARE_THREADS:-2}
ROUNDS=${COMPARE_ROUNDS:-3}
DEFAULT_SCHEMES="none sinusoidal learned continuous rotary xpos alibi dpb xl t5 kerple sandwich fire cope fox rel local"
if [ -z "${COMPARE_SCHEMES:-}" ] && [ -x "$root/examples/train_lm" ]; then
    COMPARE_SCHEMES=$("$root/examples/train_lm" --help | sed -n 's/^--pos: //p')
fi
SCHEMES=${COMPARE_SCHEMES:-$DEFAULT_SCHEMES}

if [ ! -x "$BENCH" ]; then
    echo "compare: $BENCH is missing: run make bench-compare (or make $BENCH)" >&2
    exit 1
fi
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "compare: COMPARE_ROUNDS must be a positive integer" >&2; exit 2 ;; esac
for t in $THREADS; do
    case "$t" in '' | *[!0-9]* | 0) echo "compare: COMPARE_THREADS must list positive integers" >&2; exit 2 ;; esac
done

torch=1
if ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    torch=0
    echo "# PyTorch (python3-torch for $PYTHON) is not installed: posgrad's figures alone"
    echo "# (tests/need.sh torch installs it)"
fi
# Debian's python3-torch does its GEMMs through libblas.so.3: the reference (netlib)
# BLAS unless an optimised one (libopenblas0-pthread) is installed, which the
# alternatives system then prefers; OPENBLAS_CORETYPE acts on it too.
torch_blas=$(readlink -f "$( (/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null) |
    awk '/libblas\.so\.3 .*x86-64|libblas\.so\.3 /{print $NF; exit}')" 2>/dev/null)
case "$torch_blas" in
*openblas*) torch_blas="OpenBLAS ($torch_blas)" ;;
*/blas/*) torch_blas="the reference BLAS ($torch_blas): PyTorch's GEMMs are slow; install libopenblas0-pthread" ;;
"") torch_blas="unknown" ;;
esac
jemalloc=$( (/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null) | awk '/libjemalloc\.so\.2 /{print $NF; exit}')

out=$(mktemp)
trap 'rm -f "$out"' EXIT INT TERM

# the value of the line named exactly $1 in the output of a run, or nothing
value_of() { awk -v n="$1" '$1 == n {print $2; exit}'; }

posgrad_run() { "$BENCH" "$1" 2>/dev/null | value_of "$1"; }

# PyTorch's environment: OpenMP threads that sleep when idle; its BLAS (OpenBLAS
# does not follow torch.set_num_threads) at the same thread count; an allocator that
# keeps the memory it frees: jemalloc without purging (MALLOC_CONF), else glibc's
# malloc without trimming and with mmap only above 32 MB (its largest threshold). A
# step allocates and frees hundreds of MB; an allocator that hands them back to the
# kernel pays a page fault per page on the next step, which on a virtual machine made
# PyTorch's step up to 10x slower here. A MALLOC_CONF or MALLOC_*_ you set is kept.
torch_run() { # scheme threads dtype name
    if [ -n "$jemalloc" ]; then
        set -- "$@" LD_PRELOAD="$jemalloc" MALLOC_CONF="${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}"
    else
        set -- "$@" MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}" \
            MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
    fi
    scheme=$1 threads=$2 dtype=$3 name=$4
    shift 4
    env OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS="$threads" "$@" "$PYTHON" "$here/torch_train.py" \
        --scheme "$scheme" --threads "$threads" --dtype "$dtype" 2>/dev/null | value_of "$name"
}

# one alternated measurement: appends "who name value round" lines to $out (round: $r)
measure() { # scheme threads dtype
    suffix=$([ "$3" = f64 ] && echo _f64)
    name="train_$1${suffix}_t$2"
    v=$(posgrad_run "$name")
    echo "posgrad $name ${v:-0} $r" >>"$out" # 0: the run failed (left out below)
    if [ "$torch" = 1 ]; then
        v=$(torch_run "$1" "$2" "$3" "$name")
        echo "torch $name ${v:-0} $r" >>"$out"
    fi
}

echo "# posgrad beside PyTorch: tokens/s of the toy training step (bench_train.c), $ROUNDS alternated rounds"
echo "# machine: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null), $(nproc 2>/dev/null) cores;" \
    "PyTorch $([ "$torch" = 1 ] && "$PYTHON" -c 'import torch; print(torch.__version__)' || echo missing)," \
    "allocator $([ -n "$jemalloc" ] && echo "jemalloc $jemalloc" || echo "glibc (libjemalloc2 not installed)")"
[ "$torch" = 1 ] && echo "# PyTorch's BLAS (libblas.so.3): $torch_blas; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
interleave=0
case " $THREADS " in *" 1 "*) case " $THREADS " in *" 2 "*) interleave=1 ;; esac ;; esac
"$BENCH" fma_peak
for r in $(seq "$ROUNDS"); do
    echo "# round $r of $ROUNDS" >&2
    # the two cores' speed ratio now: a 2-thread figure waits for the slower one
    "$BENCH" core_skew | sed "s/^core_skew /core_skew_round$r /"
    # and what a second thread adds to a memory-bound pass of the MLP's size (bench_stream.c)
    "$BENCH" stream | sed -n "s/^stream_4096k_t2_over_t1 /stream_4096k_t2_over_t1_round$r /p"
    for s in $SCHEMES; do
        for t in $THREADS; do
            measure "$s" "$t" f32
        done
        if [ "$interleave" = 1 ]; then # 1 and 2 threads in one process, blocks of 5 steps in turn
            sc=$("$BENCH" --scaling "$s" 40 2 2>/dev/null)
            v=$(printf '%s\n' "$sc" | value_of "scaling_${s}_t2_over_t1")
            b=$(printf '%s\n' "$sc" | value_of "scaling_${s}_t2_over_t1_blockwise")
            echo "interleaved $s ${v:-0} $r" >>"$out"
            echo "blockwise $s ${b:-0} $r" >>"$out"
        fi
    done
    case " $THREADS " in *" 2 "*) measure none 2 f64 ;; esac
done

# median (range) per who and name, the table, the compare_ lines and the ratios
awk -v rounds="$ROUNDS" -v torch="$torch" -v threads="$THREADS" -v schemes="$SCHEMES" '
# v[1..n] sorted in place; returns their median
function sorted_median(v, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function median(k,    n, i, m, v) {
    n = cnt[k]
    for (i = 1; i <= n; i++) v[i] = val[k, i]
    m = sorted_median(v, n)
    lo[k] = v[1]; hi[k] = v[n]
    return m
}
function cell(k) { return (k in cnt) ? sprintf("%.0f (%.0f-%.0f)", med[k], lo[k], hi[k]) : "-" }
$3 != "" && $3 > 0 { k = $1 " " $2; cnt[k]++; val[k, cnt[k]] = $3; at[k, $4] = $3 }
# the median (range) of a / b over the rounds that measured both: a pair taken a minute apart
function paired(a, b,    r, n, m, v) {
    n = 0
    for (r = 1; r <= rounds; r++) if (((a, r) in at) && ((b, r) in at)) v[++n] = at[a, r] / at[b, r]
    if (n == 0) return ""
    m = sorted_median(v, n)
    return sprintf("%.2f x (%.2f-%.2f, %d rounds)", m, v[1], v[n], n)
}
END {
    for (k in cnt) med[k] = median(k)
    ns = split(schemes, S, " "); nt = split(threads, T, " ")
    print ""
    print "| scheme | threads | posgrad tokens/s, median (range) | PyTorch tokens/s, median (range) | posgrad / PyTorch |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= ns + 1; i++) for (j = 1; j <= nt; j++) {
        s = i <= ns ? S[i] : "none_f64"
        if (i > ns && T[j] != 2) continue
        n = "train_" s "_t" T[j]; p = "posgrad " n; q = "torch " n
        ratio = (p in cnt) && (q in cnt) ? sprintf("%.2f", med[p] / med[q]) : "-"
        printf "| %s | %s | %s | %s | %s |\n", s, T[j], cell(p), cell(q), ratio
        if (ratio != "-") line[++nl] = sprintf("compare_%s_t%s %s x", s, T[j], ratio)
    }
    print ""
    for (i = 1; i <= nl; i++) print line[i]
    for (i = 1; i <= ns; i++) for (w = 0; w < 2; w++) {
        who = w ? "torch" : "posgrad"; a = who " train_" S[i] "_t2"; b = who " train_" S[i] "_t1"
        if ((a in cnt) && (b in cnt)) printf "%s_t2_over_t1_%s %.2f x\n", who, S[i], med[a] / med[b]
    }
    for (i = 1; i <= ns; i++) for (w = 0; w < 2; w++) {
        who = w ? "torch" : "posgrad"; p = paired(who " train_" S[i] "_t2", who " train_" S[i] "_t1")
        if (p != "") printf "%s_t2_over_t1_paired_%s %s\n", who, S[i], p
    }
    for (i = 1; i <= ns; i++) {
        k = "interleaved " S[i]
        if (k in cnt) printf "posgrad_t2_over_t1_interleaved_%s %.2f x (%.2f-%.2f, %d rounds)\n", S[i], med[k], lo[k], hi[k], cnt[k]
    }
    for (i = 1; i <= ns; i++) {
        k = "blockwise " S[i]
        if (k in cnt) printf "posgrad_t2_over_t1_blockwise_%s %.2f x (%.2f-%.2f, %d rounds)\n", S[i], med[k], lo[k], hi[k], cnt[k]
    }
    for (w = 0; w < 2; w++) {
        who = w ? "torch" : "posgrad"; a = who " train_none_f64_t2"; b = who " train_none_t2"
        if ((a in cnt) && (b in cnt)) printf "%s_f64_over_f32 %.2f x\n", who, med[a] / med[b]
    }
    for (w = 0; w < 2; w++) {
        who = w ? "torch" : "posgrad"; p = paired(who " train_none_f64_t2", who " train_none_t2")
        if (p != "") printf "%s_f64_over_f32_paired %s\n", who, p
    }
}' "$out"

if [ "${COMPARE_BLAS:-1}" != 0 ]; then
    echo ""
    echo "# posgrad's GEMM beside OpenBLAS (bench blas; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
    "$BENCH" blas
fi
