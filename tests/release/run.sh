#!/bin/sh
# A packager's build: SOURCE_DIR configured with --buildtype=release (-O3, NDEBUG) by gcc or
# clang, with -Dwerror=true, so that a warning the optimiser or the other compiler sees fails
# here rather than in a user's build. Tests, which compile at -O0 in every build type, are left
# out. The build directory is kept, so a second run only compiles what changed.
#
# usage: tests/release/run.sh gcc|clang SOURCE_DIR BUILD_DIR
#
# A missing compiler is a skip (exit 77), a failure under CI=true (tests/support/skip.h).
set -eu

fail() {
    echo "release build: FAILED: $*" >&2
    exit 1
}
missing() {
    case ${CI:-} in
    [Tt][Rr][Uu][Ee] | 1 | yes) fail "$* (CI=true: a missing prerequisite fails instead of skipping)" ;;
    esac
    echo "release build: SKIP: $*"
    exit 77
}

[ $# -eq 3 ] || { echo "usage: $0 gcc|clang SOURCE_DIR BUILD_DIR" >&2; exit 2; }
case $1 in
gcc) CC=gcc CXX=g++ ;;
clang) CC=clang CXX=clang++ ;;
*) echo "usage: $0 gcc|clang SOURCE_DIR BUILD_DIR" >&2; exit 2 ;;
esac
command -v "$CXX" >/dev/null || missing "no $CXX (Debian package $([ "$1" = gcc ] && echo g++ || echo clang))"
export CC CXX
src=$2
dir=$3

t0=$(date +%s)
mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$src" --buildtype=release -Dwerror=true -Dtests=false >"$dir.setup.log" 2>&1 ||
        { cat "$dir.setup.log" >&2; fail "meson setup with $CXX failed (log above)"; }
fi
# One job per CPU, as meson compile would; the test runs alone (is_parallel: false).
meson compile -C "$dir" || fail "the release build with $CXX has warnings or errors (above)"
echo "release build: $CXX --buildtype=release -Dwerror=true: OK in $(($(date +%s) - t0)) s"
