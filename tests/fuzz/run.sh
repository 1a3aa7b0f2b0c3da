#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in a clang build dir of their own and runs them:
# `make fuzz` and the meson suite `fuzz-smoke` (part of `make test`) both come here.
#
# Usage: tests/fuzz/run.sh [--smoke] [--seconds N] [--build-only] [TARGET...]
#   TARGET        selector, form, template or config; default all four, one after the other
#   --seconds N   how long each target runs (default $FUZZ_SECONDS, else 60; 10 with --smoke)
#   --smoke       the smoke test: a fixed seed, new inputs to a temporary dir removed at the end,
#                 and exit 77 (meson's "skipped") with a message when clang or its libFuzzer
#                 runtime is missing, or exit 1 when CI=true (.ci/run sets it); without --smoke
#                 that is always an error
#   --build-only  set up and build, run nothing
#
# Environment:
#   WSGW_FUZZ_BUILD  the clang build dir (default: build-fuzz in the source tree)
#   FUZZ_CXX         the compiler (default clang++, else clang++-14)
#   FUZZ_JOBS        parallel compile jobs (default: ninja's choice)
#   FUZZ_ARGS        more libFuzzer flags, e.g. "-seed=7" or "-only_ascii=1"
#
# What it does:
#   1. Sets the build dir up once: CXX=clang++ meson setup -Dfuzz=true
#      -Db_sanitize=address,undefined -Db_lundef=false, without tests, examples and benchmarks.
#      Then builds only the fuzz targets and what they link (libwsgw and wsgwd's config parser);
#      later runs recompile only what changed. A lock keeps two runs from building at once.
#   2. Runs each target for N seconds on its seed corpus tests/fuzz/corpus/TARGET with its
#      dictionary tests/fuzz/TARGET.dict, inputs up to 4096 bytes, 10 s at most per input.
#      New inputs go to a scratch dir (WSGW_FUZZ_BUILD/corpus/TARGET, kept so that later runs
#      start from it; a temporary dir with --smoke), never into the committed corpus. A crash,
#      a broken invariant, a leak, a timeout or running out of memory writes the input to
#      tests/fuzz/crashes/TARGET-* (gitignored) and fails the run.
# Exit status: 0 when every target ran clean, 1 otherwise, 77 for a skipped smoke test.
#
# Environment (also): CI=true makes a missing clang a failure of the smoke test.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
all_targets=(selector form template config)

smoke=0
build_only=0
seconds=
targets=()
while [ $# -gt 0 ]; do
    case $1 in
    --smoke) smoke=1 ;;
    --build-only) build_only=1 ;;
    --seconds)
        [ $# -ge 2 ] || { echo "fuzz: --seconds needs a number" >&2; exit 2; }
        seconds=$2
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
        case " ${all_targets[*]} " in
        *" $1 "*) targets+=("$1") ;;
        *) echo "fuzz: unknown target '$1': use ${all_targets[*]}" >&2; exit 2 ;;
        esac
        ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
if [ -z "$seconds" ]; then
    if [ $smoke -eq 1 ]; then seconds=10; else seconds=${FUZZ_SECONDS:-60}; fi
fi
case $seconds in '' | *[!0-9]*) echo "fuzz: seconds must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

build=${WSGW_FUZZ_BUILD:-$src/build-fuzz}
crashes=$src/tests/fuzz/crashes
# meson test sets this for the tests it runs; it only slows the compilers down.
unset MALLOC_PERTURB_

# --- clang and libFuzzer ---------------------------------------------------------------------
missing() {
    if [ $smoke -eq 1 ]; then
        case ${CI:-} in
        [Tt][Rr][Uu][Ee] | 1 | yes)
            echo "fuzz-smoke: FAIL: $* (scripts/bootstrap installs clang and libclang-rt-14-dev;" \
                "CI=true: a missing prerequisite fails instead of skipping)" >&2
            exit 1
            ;;
        esac
        echo "fuzz-smoke: SKIP: $* (scripts/bootstrap installs clang and libclang-rt-14-dev)"
        exit 77
    fi
    echo "fuzz: $*: run scripts/bootstrap (or apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
}
cxx=${FUZZ_CXX:-}
if [ -z "$cxx" ]; then
    for c in clang++ clang++-14; do
        if command -v "$c" >/dev/null 2>&1; then cxx=$c; break; fi
    done
fi
if [ -z "$cxx" ] || ! command -v "$cxx" >/dev/null 2>&1; then
    missing "${cxx:-clang++} is not installed"
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }\n' >"$probe/p.cpp"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >"$probe/log" 2>&1 ||
    missing "$cxx cannot link a libFuzzer target ($(head -n 1 "$probe/log"))"

# --- 1. build --------------------------------------------------------------------------------
mkdir -p "$build"
exec 9>"$build/.fuzz-build.lock"
flock 9
if [ ! -f "$build/build.ninja" ]; then
    wipe=()
    [ -d "$build/meson-private" ] && wipe=(--wipe) # a setup that failed half-way
    echo "fuzz: setting up the clang build in $build"
    CXX=$cxx meson setup "${wipe[@]}" "$build" "$src" \
        -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Dtests=false -Dexamples=false -Dbench=false
fi
names=()
for t in "${targets[@]}"; do names+=("${t}_fuzz"); done
meson compile -C "$build" ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} "${names[@]}"
flock -u 9
[ $build_only -eq 0 ] || exit 0

# --- 2. run ----------------------------------------------------------------------------------
mkdir -p "$crashes"
if [ $smoke -eq 1 ]; then
    scratch_root=$probe # removed on exit
else
    scratch_root=$build/corpus
fi
# Readable stacks: the symbolizer may only exist with its version suffix.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer >/dev/null 2>&1 &&
    command -v llvm-symbolizer-14 >/dev/null 2>&1; then
    ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer-14)
    export ASAN_SYMBOLIZER_PATH
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1

failed=()
for t in "${targets[@]}"; do
    scratch=$scratch_root/$t
    mkdir -p "$scratch"
    flags=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -max_total_time="$seconds" -print_final_stats=1
        -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$crashes/$t-")
    [ -f "$here/$t.dict" ] && flags+=(-dict="$here/$t.dict")
    [ $smoke -eq 1 ] && flags+=(-seed=1)
    # shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags
    flags+=(${FUZZ_ARGS:-})
    echo "fuzz: $t for ${seconds}s (new inputs: $scratch, crashes: $crashes/$t-*)"
    rc=0
    # libFuzzer stops by itself; the outer limit only catches a run that hangs while it reports
    # (its out-of-memory report walks the whole heap, which can take minutes).
    timeout -k 10 $((seconds + 120)) "$build/tests/fuzz/${t}_fuzz" "${flags[@]}" \
        "$scratch" "$here/corpus/$t" || rc=$?
    if [ $rc -ne 0 ]; then
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            echo "fuzz: $t did not stop in time, probably while reporting an out-of-memory input." >&2
            echo "fuzz: to find the input, run it with -rss_limit_mb=0 -malloc_limit_mb=0 -timeout=3:" >&2
            echo "fuzz: a runaway input then shows up as a timeout, written to $crashes/$t-timeout-*" >&2
        fi
        echo "fuzz: $t FAILED (exit $rc); reproduce with: $build/tests/fuzz/${t}_fuzz $crashes/$t-<file>" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${targets[*]}: clean"
