#!/bin/sh
# tests/memcheck/run.sh BUILD SHARDS [RUNNER ARGS...]: `make valgrind`'s pass.
#
# First the runner's self-test under valgrind (tests/memcheck/selftest.sh: a planted
# failure, leak and uninitialised read must each be reported), then SHARDS valgrinds at
# once, each running every SHARDS-th test of BUILD/tests/memcheck_tests in one process
# (--shard K/SHARDS, the RUNNER ARGS after it), each through tests/checked_run.sh. Their
# logs follow one another once all have ended; a failed shard's failures are repeated at
# the very end, where a page showing only the output's tail sees them. Exit 0 when the
# self-test and every shard passed. VALGRIND (required): the valgrind command, the Makefile's VALGRIND.
set -u
build=${1:?usage: tests/memcheck/run.sh BUILD SHARDS [RUNNER ARGS...]}
shards=${2:?usage: tests/memcheck/run.sh BUILD SHARDS [RUNNER ARGS...]}
shift 2
case "$shards" in '' | *[!0-9]* | 0) echo "memcheck: SHARDS must be a positive integer, not '$shards'" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
VALGRIND=${VALGRIND:?set VALGRIND to the valgrind command and its options (make valgrind passes its own)}

# shellcheck disable=SC2086 # VALGRIND is a command with its options
"$here/selftest.sh" "$build/tests/memcheck_selftest" $VALGRIND || exit 1

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
k=0
while [ "$k" -lt "$shards" ]; do
    # shellcheck disable=SC2086
    ("$here/../checked_run.sh" $VALGRIND "$build/tests/memcheck_tests" --shard "$k/$shards" "$@" \
        >"$logs/$k.log" 2>&1
     echo $? >"$logs/$k.status") &
    k=$((k + 1))
done
wait
failed=
k=0
while [ "$k" -lt "$shards" ]; do
    echo "---- memcheck shard $k/$shards"
    cat "$logs/$k.log"
    [ "$(cat "$logs/$k.status" 2>/dev/null)" = 0 ] || failed="$failed $k"
    k=$((k + 1))
done
[ -z "$failed" ] && exit 0
# a CI page may show only the end of this output: what failed, once more, last
for k in $failed; do
    echo "---- memcheck shard $k/$shards failed (exit $(cat "$logs/$k.status" 2>/dev/null || echo '?')):" \
        "its failures, memcheck's reports and its last lines"
    grep -E '^\[FAIL\]|^==[0-9]+== [^ ]|^checked_run:' "$logs/$k.log" | head -n 40
    tail -n 5 "$logs/$k.log"
done
echo "memcheck: shard(s)$failed failed (above)" >&2
exit 1
