#!/usr/bin/env bash
# make install-check: runs the README's "Using the installed library" section
# as written (its hello.c and its commands), with HOME set to a temporary
# directory so the install goes there, and checks what the programs print.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need.sh pkg-config

# The fenced block that follows the marker line <!-- install-check:NAME -->.
readme_block() {
    awk -v marker="<!-- install-check:$1 -->" '
        $0 == marker { found = 1; next }
        found && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }' README.md
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
readme_block hello.c >"$tmp/hello.c"
readme_block commands >"$tmp/commands.sh"
[ -s "$tmp/hello.c" ] && [ -s "$tmp/commands.sh" ] || {
    echo "install-check: README.md lacks the install-check blocks" >&2
    exit 1
}

# The commands run from the repository root (make install) and build hello.c
# there; the build products go to the temporary directory.
repo=$PWD
(
    export HOME="$tmp/home"
    mkdir -p "$HOME"
    unset PKG_CONFIG_PATH LD_LIBRARY_PATH
    export BUILD="$repo/build" # reuse the repository's build of the library
    cd "$tmp"
    ln -s "$repo/Makefile" Makefile
    for d in tensor formats autograd nn optim tests examples posgrad.h posgrad.pc.in; do ln -s "$repo/$d" "$d"; done
    bash -euo pipefail commands.sh >out.txt 2>err.txt
) || {
    echo "install-check: the README's commands failed:" >&2
    cat "$tmp/err.txt" >&2
    exit 1
}
expected="loss 14, gradient 2 4 6"
got=$(grep -c "^$expected\$" "$tmp/out.txt" || true)
if [ "$got" != 2 ]; then
    echo "install-check: expected '$expected' from hello and hello_static, got:" >&2
    cat "$tmp/out.txt" >&2
    exit 1
fi
# The shared build must really use the installed libposgrad.so (found through the rpath).
# (ldd's output is read whole: grep -q would end the pipe early, a failure under pipefail)
shared_libs=$(ldd "$tmp/hello")
static_libs=$(ldd "$tmp/hello_static")
if [[ $shared_libs != *"$tmp/home/.local/lib/libposgrad.so"* ]]; then
    echo "install-check: hello does not load libposgrad.so from the install prefix:" >&2
    echo "$shared_libs" >&2
    exit 1
fi
if [[ $static_libs == *libposgrad* ]]; then
    echo "install-check: hello_static links libposgrad dynamically" >&2
    exit 1
fi
echo "install-check: README's install section works (shared and static, prefix $tmp/home/.local)"
