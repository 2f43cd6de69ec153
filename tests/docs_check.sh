#!/bin/sh
# tests/docs_check.sh: every ```c block of README.md and docs/**/*.md must compile
# against the in-tree headers and link against $BUILD/libposgrad.a, with
# -Wall -Wextra -Wpedantic -Werror. `make test` runs it after the Criterion suites.
#
# How a block is built (the HTML comment, when there is one, is the last non-blank
# line before the opening fence; it does not show on a rendered page):
#
#   a block with an #include line   a translation unit of its own: compiled; also
#                                   linked when it defines main
#   any other block                 the body of main(), after #include "posgrad.h" and
#                                   <math.h>, <stdio.h>, <stdlib.h>, <string.h>; compiled
#                                   and linked (a `return 0;` is appended)
#   <!-- docs-check: run -->        as above, then run in an empty temporary directory:
#                                   it must exit with status 0 within 120 s
#   <!-- docs-check: skip -->       not compiled: excerpts (signature lists, loops with
#                                   `...`) that are not meant to be complete
#
# Compiler messages point at the Markdown file and line (#line). Environment: BUILD
# (default build), CC (default cc). Exit status 0 when every block passes, 1 otherwise.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
CC=${CC:-cc}
LIB=$BUILD/libposgrad.a
OUT=$BUILD/docs_check
CFLAGS="-std=c11 -O0 -g -Wall -Wextra -Wpedantic -Werror -D_POSIX_C_SOURCE=200809L -I."

if [ ! -f "$LIB" ]; then
    echo "docs_check: $LIB is missing: run make first" >&2
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT" || exit 1

# Split the blocks into $OUT/bNNN.c; the manifest has one line per block:
# name, file, line of the opening fence, mode (file / body), marker (none / run / skip).
find docs -name '*.md' | sort | { echo README.md; cat; } | while read -r md; do
    awk -v md="$md" -v out="$OUT" '
        function flush(   f, i, mode) {
            n_blocks_file++
            name = sprintf("%s/b%s_%03d", out, md_id, n_blocks_file)
            f = name ".c"
            mode = has_include ? "file" : "body"
            if (mode == "body") {
                print "#include \"posgrad.h\"" > f
                print "#include <math.h>" > f
                print "#include <stdio.h>" > f
                print "#include <stdlib.h>" > f
                print "#include <string.h>" > f
                print "int main(void)" > f
                print "{" > f
            }
            printf "#line %d \"%s\"\n", start + 1, md > f
            for (i = 1; i <= nl; i++)
                print lines[i] > f
            if (mode == "body") {
                print "    return 0;" > f
                print "}" > f
            }
            close(f)
            printf "%s %s %d %s %s %d\n", name, md, start, mode, marker, has_main >> (out "/manifest")
        }
        BEGIN { md_id = md; gsub(/[^A-Za-z0-9]/, "_", md_id); inblock = 0; last = "" }
        inblock && /^```/ { flush(); inblock = 0; last = $0; next }
        inblock { lines[++nl] = $0; if ($0 ~ /^[ \t]*#[ \t]*include/) has_include = 1;
                  if ($0 ~ /(^|[^A-Za-z0-9_])main[ \t]*\(/) has_main = 1; next }
        /^```c[ \t]*$/ {
            inblock = 1; nl = 0; start = NR; has_include = 0; has_main = 0
            marker = "none"
            if (last ~ /<!--[ \t]*docs-check:[ \t]*skip[ \t]*-->/) marker = "skip"
            else if (last ~ /<!--[ \t]*docs-check:[ \t]*run[ \t]*-->/) marker = "run"
            else if (last ~ /docs-check/) marker = "bad"
            next
        }
        /[^ \t]/ { last = $0 }
    ' "$md"
done

[ -f "$OUT/manifest" ] || { echo "docs_check: no C blocks found"; exit 0; }

fail=0
n=0
skipped=0
ran=0
while read -r name md line mode marker has_main; do
    where="$md:$line"
    if [ "$marker" = skip ]; then
        skipped=$((skipped + 1))
        continue
    fi
    n=$((n + 1))
    if [ "$marker" = bad ]; then
        echo "docs_check: $where: unknown docs-check marker (use skip or run)"
        fail=1
        continue
    fi
    if [ "$mode" = file ] && [ "$has_main" = 0 ]; then
        if [ "$marker" = run ]; then
            echo "docs_check: $where: marked run but defines no main()"
            fail=1
        elif ! $CC $CFLAGS -c "$name.c" -o "$name.o" 2> "$name.log"; then
            echo "docs_check: $where: does not compile ($name.c):"
            cat "$name.log"
            fail=1
        fi
        continue
    fi
    if ! $CC $CFLAGS "$name.c" -o "$name" "$LIB" -lm -lpthread 2> "$name.log"; then
        echo "docs_check: $where: does not compile and link ($name.c):"
        cat "$name.log"
        fail=1
        continue
    fi
    if [ "$marker" = run ]; then
        ran=$((ran + 1))
        dir=$(mktemp -d) || exit 1
        prog=$(pwd)/$name
        (cd "$dir" && timeout 120 "$prog") > "$name.out" 2>&1
        rc=$?
        rm -rf "$dir"
        if [ "$rc" != 0 ]; then
            echo "docs_check: $where: exited with status $rc; its output:"
            cat "$name.out"
            fail=1
        fi
    fi
done < "$OUT/manifest"

if [ "$fail" = 0 ]; then
    echo "docs_check: $n C blocks of README.md and docs/ build ($ran of them run), $skipped marked skip"
else
    echo "docs_check: FAILED (blocks in $OUT)"
fi
exit "$fail"
