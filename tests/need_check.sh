#!/usr/bin/env bash
# make setup-check: tests/need.sh, which `make test`, `make valgrind`,
# `make fixtures` and `make fuzz` call before using a tool, on a tool that is
# present and on one that is missing (as an unprivileged user: the one-line
# instruction and a non-zero exit, nothing installed).
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "setup-check: $*" >&2; exit 1; }

out=$(tests/need.sh --header stdio.h libc6-dev 2>&1) || fail "a present header was reported missing: $out"
[ -z "$out" ] || fail "a present header printed: $out"
out=$(tests/need.sh --command sh dash 2>&1) || fail "a present command was reported missing: $out"

tests/need.sh --header 2>/dev/null && fail "a call without a header succeeded"
tests/need.sh nonsense 2>/dev/null
[ $? -eq 2 ] || fail "an unknown tool did not give exit 2"

as_nobody() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
    else
        "$@"
    fi
}
expected="posgrad: the header <no/such_header.h> is missing; install it with: sudo apt-get install -y libno-such-dev"
out=$(as_nobody tests/need.sh --header no/such_header.h libno-such-dev 2>&1)
status=$?
[ $status -eq 1 ] || fail "a missing header as a user gave exit $status, expected 1"
[ "$out" = "$expected" ] || fail "a missing header as a user printed '$out', expected '$expected'"
expected="posgrad: the command no-such-tool is missing; install it with: sudo apt-get install -y no-such-pkg"
out=$(as_nobody tests/need.sh --command no-such-tool no-such-pkg 2>&1)
[ "$out" = "$expected" ] || fail "a missing command as a user printed '$out', expected '$expected'"
echo "setup-check: tests/need.sh finds present tools and names the install command for missing ones"
