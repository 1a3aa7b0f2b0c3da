#!/usr/bin/env bash
# The meson tests `beast` and `beast_asan` (suite `node`): examples/beast/beast.cpp, a Boost.Beast
# WebSocket server embedding libwsgw, built OUT OF TREE the way a user builds it,
#   c++ -std=c++17 beast.cpp $(pkg-config --cflags --libs libwsgw) -pthread
# against a copy of libwsgw installed into a temporary DESTDIR (tests/install/installed.sh), then
# driven by node's npm `ws` clients (tests/beast/beast.js lists the checks).
#
# usage: tests/beast/run.sh BUILD_DIR SOURCE_DIR [plain|asan]
#   asan: the example (not libwsgw) is built with -fsanitize=address and run with leak detection,
#   so a session freed while registered, or leaked, fails the test.
# The Beast translation unit is heavy (about a minute of CPU): each variant compiles it once and
# runs every check against that one binary. A missing compiler, Boost.Beast (Debian's
# libboost-dev), node or pkg-config is a skip (77), a failure under CI=true.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR SOURCE_DIR [plain|asan]" >&2; exit 2; }
variant=${3:-plain}
wsgw_label="beast ($variant)"
src=$(cd "$2" 2>/dev/null && pwd) || { echo "$wsgw_label: source directory '$2' does not exist" >&2; exit 1; }
# shellcheck source=tests/node/lib/daemon.sh
. "$src/tests/node/lib/daemon.sh"
fail() { wsgw_die "FAILED: $*"; }
missing() { wsgw_missing "$*"; }
build=$(cd "$1" 2>/dev/null && pwd) || fail "build directory '$1' does not exist"
example="$src/examples/beast/beast.cpp"
[ -f "$example" ] || fail "$example not found (is '$2' the source directory?)"

cxx=${CXX:-c++}
command -v "$cxx" >/dev/null || missing "no C++ compiler '$cxx' (set CXX)"
wsgw_check_node
wsgw_ensure_ws >&2
echo '#include <boost/beast/websocket.hpp>' | "$cxx" -std=c++17 -x c++ -fsyntax-only - 2>/dev/null ||
    missing "Boost.Beast is not installed: apt-get install libboost-dev (scripts/bootstrap does)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-beast.XXXXXX") || fail "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
. "$src/tests/install/installed.sh"

flags=(-std=c++17 -O1 -g -Wall -Wextra -Wpedantic -Werror)
case $variant in
plain) ;;
asan) flags+=(-fsanitize=address -fno-omit-frame-pointer) ;;
*) fail "unknown variant '$variant' (plain or asan)" ;;
esac
# shellcheck disable=SC2086 # cflags and libs are word lists
if ! "$cxx" "${flags[@]}" $cflags "$example" -o "$tmp/beast" $libs -pthread >"$tmp/compile.log" 2>&1; then
    cat "$tmp/compile.log" >&2
    fail "compiling $example against the installed libwsgw failed (log above); flags: ${flags[*]} $cflags $libs"
fi

LD_LIBRARY_PATH="$libdir" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
    WSGW_BEAST_VARIANT=$variant node "$src/tests/beast/beast.js" "$tmp/beast"
