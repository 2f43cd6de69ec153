#!/usr/bin/env bash
# make browser-check: bias_lab's report.html in a real browser (headless
# Chromium, Debian package `chromium`; tests/need.sh installs it as root).
# A tiny run of every scheme over 2 seeds writes the report; then
#   1. report.html#selftest, read back with --dump-dom, must say "selftest: PASS":
#      every image decoded, and each slider, moved through every epoch, shows
#      exactly that epoch's figures, a different image at each position
#      (examples/bias_lab_report.h);
#   2. a screenshot of the page, decoded by the project's own PNG reader
#      (tests/browser/shot_check.c), must not be blank and must show the
#      heatmaps' colormap.
# The report must also name no external resource (it opens offline).
#
#   PG_BROWSER_REPORT=path/report.html   check that report instead of a tiny run
#   PG_BROWSER_SHOT=path.png             keep the screenshot there (docs/teaching.md:
#                                        docs/img/bias_lab_report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
t0=$(date +%s)
fail() { echo "browser-check: $*" >&2; exit 1; }

tests/need.sh chromium
dir=$(mktemp -d /tmp/pg_browser_check.XXXXXX)
trap 'rm -rf "$dir"' EXIT

report=${PG_BROWSER_REPORT:-}
if [ -z "$report" ]; then
    examples/bias_lab --epochs 3 --steps 4 --batch 4 --probe 8 --seeds 2 --threads 1 --out "$dir/out" --quiet \
        >"$dir/lab.txt" 2>&1 || fail "bias_lab failed: $(tail -n 3 "$dir/lab.txt")"
    report=$dir/out/report.html
fi
[ -s "$report" ] || fail "no report at '$report'"
report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
if grep -Eqo '(src|href)="(https?:|//)' "$report"; then
    fail "$report names an external resource: $(grep -Eo '(src|href)="(https?:|//)[^"]*' "$report" | head -n 1)"
fi

# --no-sandbox: Chromium refuses to run as root otherwise; --disable-gpu: no GPU here.
chrome() { timeout 90 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "$@" 2>>"$dir/chromium.log"; }

chrome --dump-dom "file://$report#selftest" >"$dir/dom.html" || fail "chromium --dump-dom failed: $(tail -n 2 "$dir/chromium.log")"
title=$(sed -n 's:.*<title>\(.*\)</title>.*:\1:p' "$dir/dom.html" | head -n 1)
case "$title" in
"selftest: PASS"*) ;;
*) fail "report.html#selftest: ${title:-no title} (the page's own check; 'bias_lab report' means its script did not run)" ;;
esac

chrome --screenshot="$dir/shot.png" --window-size=1280,1600 "file://$report" >/dev/null ||
    fail "chromium --screenshot failed: $(tail -n 2 "$dir/chromium.log")"
shot=$("$BUILD/tests/browser/shot_check" "$dir/shot.png") || fail "the screenshot: see above"
if [ -n "${PG_BROWSER_SHOT:-}" ]; then
    cp "$dir/shot.png" "$PG_BROWSER_SHOT"
fi
echo "browser-check: $title"
echo "browser-check: ${shot#shot_check: }"
echo "browser-check: report.html renders in Chromium, every image loads, the sliders change the epoch ($(($(date +%s) - t0)) s)"
