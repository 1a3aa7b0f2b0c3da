#!/bin/sh
# The Debian packages, built and opened: scripts/build-deb (dpkg-buildpackage -us -uc -b in a
# clean copy, then lintian, which must report no error), then what each package holds and
# declares (dpkg-deb -c, -I), and the packaged wsgwd run from the extracted files.
#
# usage: tests/deb/run.sh SOURCE_DIR OUT_DIR
#
# Missing packaging tools (dpkg-buildpackage, debhelper, lintian) are a skip (exit 77), or a
# failure under CI=true (tests/support/skip.h). The build takes minutes: meson runs this test
# alone (suite deb).
set -eu

fail() {
    echo "deb test: FAILED: $*" >&2
    exit 1
}
missing() {
    case ${CI:-} in
    [Tt][Rr][Uu][Ee] | 1 | yes) fail "$* (CI=true: a missing prerequisite fails instead of skipping)" ;;
    esac
    echo "deb test: SKIP: $*"
    exit 77
}

[ $# -eq 2 ] || { echo "usage: $0 SOURCE_DIR OUT_DIR" >&2; exit 2; }
src=$(cd "$1" && pwd)
out=$2
for tool in dpkg-buildpackage dh fakeroot lintian dpkg-parsechangelog; do
    command -v "$tool" >/dev/null || missing "'$tool' is not installed (scripts/bootstrap installs debhelper, dpkg-dev, fakeroot, lintian)"
done
dpkg-checkbuilddeps "$src/debian/control" 2>/tmp/wsgw-deb-builddeps.$$ ||
    { msg=$(cat /tmp/wsgw-deb-builddeps.$$); rm -f /tmp/wsgw-deb-builddeps.$$; missing "build dependencies: $msg"; }
rm -f /tmp/wsgw-deb-builddeps.$$

t0=$(date +%s)
# werror: this build is also the suites' optimised GCC build (-O2, Debian's hardening flags), and
# in a test a warning is an error (debian/rules).
DEB_BUILD_OPTIONS="parallel=$(nproc) nocheck werror" "$src/scripts/build-deb" "$out" ||
    fail "scripts/build-deb failed (output above)"
grep -q -- "-Dwerror=true" "$out/build.log" || fail "the package was not configured with -Dwerror=true (debian/rules, DEB_BUILD_OPTIONS=werror)"
echo "deb test: built and linted in $(($(date +%s) - t0)) s"

version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
daemon="$out/wsgwd_${version}_${arch}.deb"
# The library package is named for its soversion (meson.build states the rule).
lib=$(ls "$out"/libwsgw*_"${version}_${arch}".deb 2>/dev/null | grep -E "/libwsgw[0-9]+_" | head -n 1)
[ -n "$lib" ] || fail "no libwsgw<soversion> package was built: $(ls "$out")"
soversion=$(basename "$lib" | sed 's/^libwsgw\([0-9]*\)_.*/\1/')
dev="$out/libwsgw-dev_${version}_${arch}.deb"
# The broker parts, one package each (README "Linking"), named for the same soversion.
redis="$out/libwsgw-redis${soversion}_${version}_${arch}.deb"
amqp="$out/libwsgw-amqp${soversion}_${version}_${arch}.deb"
httpsink="$out/libwsgw-http${soversion}_${version}_${arch}.deb"
for f in "$daemon" "$lib" "$dev" "$redis" "$amqp" "$httpsink"; do [ -f "$f" ] || fail "$(basename "$f") was not built: $(ls "$out")"; done

# $1 package, $2 what its listing must hold (a path, as dpkg-deb -c prints it after ./).
has() {
    dpkg-deb -c "$1" | awk '{print $6}' | grep -qx "./$2" || fail "$(basename "$1") does not hold /$2"
}
field() { dpkg-deb -f "$1" "$2"; }

# wsgwd: the daemon, its conffile, the unit, the man page; maintainer scripts that create the
# user and enable the unit; dependencies worked out by dpkg-shlibdeps.
has "$daemon" usr/bin/wsgwd
has "$daemon" etc/wsgw/config.yml
has "$daemon" lib/systemd/system/wsgwd.service
has "$daemon" usr/share/man/man8/wsgwd.8.gz
dpkg-deb -I "$daemon" conffiles | grep -qx /etc/wsgw/config.yml || fail "/etc/wsgw/config.yml is not a conffile"
depends=$(field "$daemon" Depends)
for d in "libwsgw$soversion (>= $version)" "libwsgw-redis$soversion (>= $version)" "libwsgw-amqp$soversion (>= $version)" \
    "libwsgw-http$soversion (>= $version)" libwebsockets libsystemd0 libyaml-cpp libspdlog libprometheus-cpp-core \
    libstdc++6 libc6 adduser; do
    case "$depends" in *"$d"*) ;; *) fail "wsgwd's Depends lacks $d: $depends" ;; esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgw-debtest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$daemon" "$tmp/control"
grep -q 'adduser --system --group' "$tmp/control/postinst" || fail "wsgwd's postinst does not create the system user"
grep -q 'deb-systemd-helper' "$tmp/control/postinst" || fail "wsgwd's postinst does not enable the unit"
dpkg-deb -x "$daemon" "$tmp/root"
unit="$tmp/root/lib/systemd/system/wsgwd.service"
for line in Type=notify User=_wsgw NoNewPrivileges=yes ProtectSystem=strict LimitNOFILE=1048576 WatchdogSec=30 \
    'ExecStart=/usr/bin/wsgwd --config /etc/wsgw/config.yml' 'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$line" "$unit" || fail "wsgwd.service lacks '$line'"
done
# systemd's own check of the unit: every key known, every value valid. The binary it names is in
# the extracted tree, not at /usr/bin, which is all it may say.
if command -v systemd-analyze >/dev/null; then
    complaints=$(systemd-analyze verify --man=no "$unit" 2>&1 | grep -v 'Command /usr/bin/wsgwd is not executable' || true)
    [ -z "$complaints" ] || fail "systemd-analyze verify wsgwd.service: $complaints"
fi

# A library package ($1) holding library $2: the library under its SONAME, extracted (the
# packaged wsgwd below runs with it), its shlibs for the packages built on it, Multi-Arch.
library() {
    pkg=$1 name=$2
    has "$pkg" "usr/lib/$multiarch/$name.so.$soversion"
    dpkg-deb -x "$pkg" "$tmp/root"
    got=$(objdump -p "$tmp/root/usr/lib/$multiarch/$name.so.$soversion" | awk '/SONAME/ {print $2}')
    [ "$got" = "$name.so.$soversion" ] || fail "$name's SONAME is '$got', not $name.so.$soversion"
    dpkg-deb -I "$pkg" shlibs | grep -q "^$name $soversion $name$soversion" || fail "$name$soversion has no shlibs entry"
    [ "$(field "$pkg" Multi-Arch)" = same ] || fail "$name$soversion is not Multi-Arch: same"
}
library "$lib" libwsgw
# The core needs the C++ runtime only: no broker client library (an embedder without brokers
# installs none).
case "$(field "$lib" Depends)" in *libstdc++6*) ;; *) fail "libwsgw$soversion's Depends lacks libstdc++6: $(field "$lib" Depends)" ;; esac
for d in libhiredis librabbitmq libcpp-httplib libssl; do
    case "$(field "$lib" Depends)" in *"$d"*) fail "libwsgw$soversion depends on $d: $(field "$lib" Depends)" ;; esac
done
# Each broker part: a library package that needs the core and its client library.
# $1 package, $2 library name, $3... what its Depends must name besides the core.
part() {
    library "$1" "$2"
    pkg=$1 name=$2
    shift 2
    for d in "libwsgw$soversion (>= $version)" "$@"; do
        case "$(field "$pkg" Depends)" in *"$d"*) ;; *) fail "$name$soversion's Depends lacks $d: $(field "$pkg" Depends)" ;; esac
    done
}
part "$redis" libwsgw-redis libhiredis
part "$amqp" libwsgw-amqp librabbitmq "libwsgw-redis$soversion (>= $version)"
part "$httpsink" libwsgw-http libcpp-httplib libssl

# libwsgw-dev: headers, pkg-config file, the link; it needs exactly this library version.
has "$dev" usr/include/wsgw/wsgw.h
has "$dev" usr/include/wsgw/version.h
has "$dev" "usr/lib/$multiarch/pkgconfig/libwsgw.pc"
for name in libwsgw libwsgw-redis libwsgw-amqp libwsgw-http; do
    has "$dev" "usr/lib/$multiarch/pkgconfig/$name.pc"
    has "$dev" "usr/lib/$multiarch/$name.so"
    case "$(field "$dev" Depends)" in
    *"$name$soversion (= $version)"*) ;;
    *) fail "libwsgw-dev does not depend on $name$soversion (= $version): $(field "$dev" Depends)" ;;
    esac
done
dpkg-deb -x "$dev" "$tmp/root"

# The packaged daemon runs from the extracted files: version, the shipped config, the man page.
export LD_LIBRARY_PATH="$tmp/root/usr/lib/$multiarch"
v=$("$tmp/root/usr/bin/wsgwd" --version) || fail "the packaged wsgwd --version failed"
[ "$v" = "wsgwd ${version%%-*}" ] || fail "the packaged wsgwd says '$v', the package is $version"
"$tmp/root/usr/bin/wsgwd" --check-config "$tmp/root/etc/wsgw/config.yml" >/dev/null ||
    fail "the packaged /etc/wsgw/config.yml does not pass --check-config"
zcat "$tmp/root/usr/share/man/man8/wsgwd.8.gz" | grep -q '^\.SH EXIT STATUS' || fail "wsgwd(8) has no EXIT STATUS"

# A program built against the -dev package, as a user would: pkg-config with the prefix moved.
pc="$tmp/root/usr/lib/$multiarch/pkgconfig"
flags=$(PKG_CONFIG_PATH="$pc" pkg-config --define-variable=prefix="$tmp/root/usr" --cflags --libs libwsgw) ||
    fail "pkg-config cannot read the packaged libwsgw.pc"
# shellcheck disable=SC2086
${CXX:-c++} -std=c++17 -Wall -Wextra -Werror "$src/examples/consumer/consumer.cpp" -o "$tmp/consumer" $flags ||
    fail "examples/consumer/consumer.cpp does not build against libwsgw-dev"
"$tmp/consumer" >/dev/null || fail "the consumer built against libwsgw-dev failed"

grep -q '^E: ' "$out/lintian.txt" && fail "lintian errors: $(grep '^E: ' "$out/lintian.txt")"
echo "deb test: lintian warnings: $(grep -c '^W: ' "$out/lintian.txt" || true)"
grep '^W: ' "$out/lintian.txt" || true
echo "deb test: OK: $(basename "$daemon") $(basename "$lib") $(basename "$redis") $(basename "$amqp") $(basename "$httpsink") $(basename "$dev")"
