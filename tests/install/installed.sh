# shellcheck shell=sh
# Installs the libwsgw of a meson build directory into a temporary DESTDIR and points pkg-config
# at that copy, the way a user's build finds an installed libwsgw. Sourced (POSIX sh) by
# tests/install/run.sh and tests/beast/run.sh, which define before sourcing it:
#   fail MESSAGE, missing MESSAGE   (exit 1; skip with 77, a failure under CI=true)
#   build, src                      absolute paths of the build and source directories
#   tmp                             a temporary directory the caller removes
# and after it read: dest (the DESTDIR), prefix (as configured), libdir (inside dest), cflags and
# libs (`pkg-config --cflags` / `--libs libwsgw` relocated into dest), PKG_CONFIG_PATH (exported),
# pkgconfig (the pkg-config command) and relocate (its --define-variable for other modules).

pkgconfig=${PKG_CONFIG:-pkg-config}
meson=${MESON:-meson}
command -v "$pkgconfig" >/dev/null || missing "no '$pkgconfig' (set PKG_CONFIG)"
command -v "$meson" >/dev/null || missing "no '$meson' (set MESON)"
[ -f "$build/meson-private/coredata.dat" ] || fail "'$build' is not a configured meson build directory"
dest="$tmp/dest"

# 1. Install what is built (meson test has built everything before it runs the tests).
if ! "$meson" install --no-rebuild -C "$build" --destdir "$dest" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log" >&2
    fail "meson install --destdir failed (log above)"
fi

# 2. Find the installed libwsgw.pc and make pkg-config use it with the prefix moved into DESTDIR.
#    Every path in meson's .pc file derives from ${prefix}, so redefining prefix relocates it.
pc=$(find "$dest" -name libwsgw.pc -path '*/pkgconfig/*')
[ -n "$pc" ] || fail "no libwsgw.pc was installed under $dest"
[ "$(printf '%s\n' "$pc" | wc -l)" -eq 1 ] || fail "several libwsgw.pc installed: $pc"
PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
prefix=$("$pkgconfig" --variable=prefix libwsgw) || fail "pkg-config cannot read $pc"
case "$prefix" in
/*) ;;
*) fail "libwsgw.pc has a relative prefix '$prefix'" ;;
esac
relocate="--define-variable=prefix=$dest$prefix"
libdir=$("$pkgconfig" "$relocate" --variable=libdir libwsgw)
case "$libdir" in
"$dest"/*) ;;
*) fail "libwsgw.pc's libdir '$libdir' does not follow its prefix; cannot relocate it into DESTDIR" ;;
esac
ls "$libdir"/libwsgw.so* >/dev/null 2>&1 || fail "no libwsgw.so in $libdir"
cflags=$("$pkgconfig" "$relocate" --cflags libwsgw) || fail "pkg-config --cflags libwsgw failed"
libs=$("$pkgconfig" "$relocate" --libs libwsgw) || fail "pkg-config --libs libwsgw failed"
