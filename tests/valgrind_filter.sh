#!/bin/sh
# tests/valgrind_filter.sh RUN_TESTS: the Criterion --filter of `make valgrind`,
# every test but those of tests/valgrind_skip.txt: !(pattern|pattern|...).
# Fails, naming the line, when a pattern matches none of RUN_TESTS's tests.
set -u
tests=${1:?usage: tests/valgrind_filter.sh RUN_TESTS}
skip=$(dirname "$0")/valgrind_skip.txt
# `RUN_TESTS --list`: "suite: N tests" lines, then one "├── test" line per test
names=$("$tests" --list 2>/dev/null | awk '/^[^ ├└│]/ {sub(/:.*/, ""); s = $0; next}
    {gsub(/[├└─│ ]/, ""); if ($0 != "") print s "/" $0}') || exit 1
if [ -z "$names" ]; then
    echo "valgrind_filter: $tests --list listed no tests" >&2
    exit 1
fi
alts=""
while IFS= read -r pat; do
    case "$pat" in '' | '#'*) continue ;; esac
    found=0
    for name in $names; do
        # shellcheck disable=SC2254 # the pattern is a glob on purpose
        case "$name" in $pat) found=1; break ;; esac
    done
    if [ "$found" = 0 ]; then
        echo "valgrind_filter: tests/valgrind_skip.txt: '$pat' matches no test of $tests" >&2
        exit 1
    fi
    alts="${alts:+$alts|}$pat"
done < "$skip"
echo "!($alts)"
