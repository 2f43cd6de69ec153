#!/bin/sh
# Makes sure a build or test tool is on this machine before make uses it.
#
#   tests/need.sh criterion | valgrind | pkg-config | clang | torch | chromium
#   tests/need.sh --header <header> <debian-package>     (any C header)
#   tests/need.sh --command <command> <debian-package>   (any program)
#
# Present: silent, exit 0. Missing and running as root on Debian/Ubuntu:
# installs the package with a non-interactive apt-get and says so in one line.
# Missing otherwise: one line naming the exact command to run, exit 1.
set -u

CC=${CC:-cc}

have_header() { printf '#include <%s>\n' "$1" | $CC -E -x c - >/dev/null 2>&1; }
have_command() { command -v "$1" >/dev/null 2>&1; }
have_torch() { /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; }

case "${1:-}" in
criterion) check="have_header criterion/criterion.h" pkg=libcriterion-dev what="Criterion (the test framework)" ;;
valgrind) check="have_command valgrind" pkg=valgrind what="valgrind" ;;
pkg-config) check="have_command pkg-config" pkg=pkg-config what="pkg-config" ;;
clang) check="have_command clang" pkg=clang what="clang (libFuzzer)" ;;
torch) check="have_torch" pkg=python3-torch what="PyTorch for /usr/bin/python3" ;;
chromium) check="have_command chromium" pkg=chromium what="Chromium (make browser-check)" ;;
--header) check="have_header ${2:?header}" pkg=${3:?package} what="the header <$2>" ;;
--command) check="have_command ${2:?command}" pkg=${3:?package} what="the command $2" ;;
*)
    echo "usage: tests/need.sh criterion|valgrind|pkg-config|clang|torch|chromium" >&2
    echo "       tests/need.sh --header <header> <package> | --command <command> <package>" >&2
    exit 2
    ;;
esac

$check && exit 0

if [ "$(id -u)" -ne 0 ] || ! have_command apt-get; then
    echo "posgrad: $what is missing; install it with: sudo apt-get install -y $pkg" >&2
    exit 1
fi

echo "posgrad: $what is missing; installing $pkg with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# The package lists of a fresh machine may be empty or stale: update once on failure.
if ! apt-get install -y -qq "$pkg" >"$log" 2>&1; then
    apt-get update -qq >>"$log" 2>&1
    if ! apt-get install -y -qq "$pkg" >>"$log" 2>&1; then
        tail -n 5 "$log" >&2
        rm -f "$log"
        echo "posgrad: apt-get could not install $pkg (its last lines are above)" >&2
        exit 1
    fi
fi
rm -f "$log"
if ! $check; then
    echo "posgrad: installed $pkg but $what is still missing" >&2
    exit 1
fi
