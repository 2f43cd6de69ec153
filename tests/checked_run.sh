#!/usr/bin/env bash
# Runs a test command and fails if it fails OR if a sanitizer or valgrind
# reported anything. Criterion runs each test in a forked worker whose leak
# report does not change the exit status, so the output is read as well.
set -u
log=$(mktemp)
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if grep -Eq 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|^==[0-9]+== [^ ]' "$log"; then
    echo "checked_run: the sanitizer or valgrind reported errors above" >&2
    status=1
fi
rm -f "$log"
exit "$status"
