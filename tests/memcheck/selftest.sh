#!/bin/sh
# tests/memcheck/selftest.sh SELFTEST [VALGRIND...]: runs the runner's self-test
# (tests/memcheck/selftest.c), natively or under the valgrind command given, and checks
# that every outcome it plants comes out as planted. Exit 0 when they all do.
set -u
bin=${1:?usage: tests/memcheck/selftest.sh SELFTEST [VALGRIND...]}
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" "$bin" >"$out" 2>&1
status=$?
bad=0
want() { grep -q -- "$1" "$out" || { echo "memcheck selftest: no line with '$1'" >&2; bad=1; }; }
never() { ! grep -q -- "$1" "$out" || { echo "memcheck selftest: a line with '$1'" >&2; bad=1; }; }
want '\[FAIL\] selftest/fails_and_stops: .*1 == 2 is false: one is not 2'
never 'not reached'
want '\[FAIL\] selftest/expect_goes_on'
want 'after the expect'
want '\[SKIP\] selftest/skips: skipped on purpose'
want '\[FAIL\] selftest/fini_after_failure'
want 'fini ran'
never '\[FAIL\] selftest/passes'
never '\[FAIL\] selftest/limits_'
if [ $# -gt 0 ]; then # under valgrind: the leak and the uninitialised read, each by name
    want '\[FAIL\] selftest/leaks: memcheck reported'
    want '\[FAIL\] selftest/reads_uninitialised: memcheck reported'
    want 'selftest (shard 0/1): 3 passed, 5 failed, 1 skipped'
else
    want 'selftest (shard 0/1): 5 passed, 3 failed, 1 skipped'
fi
[ "$status" = 1 ] || { echo "memcheck selftest: exit status $status, not 1" >&2; bad=1; }
if [ "$bad" != 0 ]; then
    echo "memcheck selftest: the runner's output was:" >&2
    cat "$out" >&2
    exit 1
fi
echo "memcheck selftest: every planted outcome came out${1:+ under $1}"
