#!/bin/sh
# Installs libwsgw from a meson build directory into a temporary DESTDIR, then builds and runs
# examples/consumer/consumer.cpp against that copy the way a user would:
#   c++ -std=c++17 consumer.cpp $(pkg-config --cflags --libs libwsgw)
#
# usage: tests/install/run.sh BUILD_DIR SOURCE_DIR
#
# Then checks the linking split: libwsgw.so's NEEDED list has no broker client, the consumer loads
# none, and a program calling the Redis, AMQP and webhook factories builds through
# libwsgw-redis.pc, libwsgw-amqp.pc and libwsgw-http.pc.
#
# Exits 0 when the consumer compiles (with -Werror), links against the installed library and
# passes its checks; non-zero with a message saying which step failed otherwise. A missing tool
# (compiler, pkg-config, meson) is a skip: exit 77 with a message, or exit 1 when CI=true (.ci/run
# sets it). The temporary directory is removed on every exit. Environment: CXX (default c++),
# PKG_CONFIG (default pkg-config), MESON (default meson), CI.
set -eu

fail() {
    echo "install test: FAILED: $*" >&2
    exit 1
}

missing() {
    case ${CI:-} in
    [Tt][Rr][Uu][Ee] | 1 | yes) fail "$* (CI=true: a missing prerequisite fails instead of skipping)" ;;
    esac
    echo "install test: SKIP: $*"
    exit 77
}

[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2; exit 2; }
build=$(cd "$1" 2>/dev/null && pwd) || fail "build directory '$1' does not exist"
src=$(cd "$2" 2>/dev/null && pwd) || fail "source directory '$2' does not exist"
consumer="$src/examples/consumer/consumer.cpp"
[ -f "$consumer" ] || fail "$consumer not found (is '$2' the source directory?)"

cxx=${CXX:-c++}
command -v "$cxx" >/dev/null || missing "no C++ compiler '$cxx' (set CXX)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-install.XXXXXX") || fail "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# 1-2. Install into "$tmp/dest" and point pkg-config at it (cflags, libs, libdir, dest, prefix).
. "$src/tests/install/installed.sh"
# The project has no public home page, so the .pc file names none (it once had a placeholder).
if grep -qi '^URL:.*invalid' "$pc"; then fail "libwsgw.pc names a placeholder URL: $(grep -i '^URL:' "$pc")"; fi

# 3. Compile the consumer out of tree: C++17, installed headers only, warnings are errors.
# shellcheck disable=SC2086 # cflags and libs are word lists
if ! "$cxx" -std=c++17 -Wall -Wextra -Wpedantic -Werror $cflags "$consumer" -o "$tmp/consumer" $libs \
    >"$tmp/compile.log" 2>&1; then
    cat "$tmp/compile.log" >&2
    fail "compiling $consumer against the installed libwsgw failed (log above); flags: $cflags $libs"
fi

# 4. Run it against the installed library, and make sure that is the one it loaded.
if command -v ldd >/dev/null 2>&1; then
    loaded=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/consumer" | grep 'libwsgw\.so' || true)
    case "$loaded" in
    *"=> $dest"/*) ;;
    *) fail "the consumer does not load the installed libwsgw: ${loaded:-no libwsgw in ldd output}" ;;
    esac
fi
if ! LD_LIBRARY_PATH="$libdir" "$tmp/consumer"; then
    fail "the consumer built against the installed libwsgw reported errors (above)"
fi
# 5. The core library needs no broker client: hiredis, rabbitmq-c, cpp-httplib and libcrypto are
#    the NEEDED entries of libwsgw-redis, libwsgw-amqp and libwsgw-http only (README: Linking).
command -v readelf >/dev/null || missing "no readelf (Debian package binutils)"
needed=$(readelf -d "$libdir/libwsgw.so" | grep NEEDED || true)
case "$needed" in
*hiredis* | *rabbitmq* | *httplib* | *libcrypto* | *libssl*) fail "libwsgw.so needs a broker client:
$needed" ;;
esac
if LD_LIBRARY_PATH="$libdir" ldd "$tmp/consumer" | grep -E 'hiredis|rabbitmq|httplib' >&2; then
    fail "the consumer, linked with libwsgw alone, loads a broker client (above)"
fi

# 6. The broker libraries through their own .pc files (Requires: libwsgw): a program calling
#    each factory compiles, links and runs against the installed copies.
cat >"$tmp/brokers.cpp" <<'CPP'
#include <wsgw/wsgw.h>
int main() {
    // Each gives a sink, or (a build without that client library) nullptr and the reason.
    std::string e1, e2, e3;
    wsgw::HttpSinkOptions http;
    http.url = "http://127.0.0.1:9/events";
    bool ok = (wsgw::makeRedisStreamSink({}, &e1) || !e1.empty()) && (wsgw::makeAmqpSink({}, &e2) || !e2.empty()) &&
              (wsgw::makeHttpSink(http, &e3) || !e3.empty());
    return ok ? 0 : 1;
}
CPP
brokerlibs=$("$pkgconfig" "$relocate" --cflags --libs libwsgw-redis libwsgw-amqp libwsgw-http) ||
    fail "pkg-config cannot read libwsgw-redis.pc, libwsgw-amqp.pc and libwsgw-http.pc"
# shellcheck disable=SC2086 # a word list
if ! "$cxx" -std=c++17 -Wall -Wextra -Werror "$tmp/brokers.cpp" -o "$tmp/brokers" $brokerlibs >"$tmp/compile.log" 2>&1; then
    cat "$tmp/compile.log" >&2
    fail "a program using the broker libraries did not build through their .pc files: $brokerlibs"
fi
LD_LIBRARY_PATH="$libdir" "$tmp/brokers" || fail "the broker factories failed against the installed libraries"
echo "install test: ok (installed under $prefix, compiled with $cxx -std=c++17)"
