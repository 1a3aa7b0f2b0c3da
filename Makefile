# A thin front door to meson. The two commands a newcomer needs: `make run` and `make test`.

BUILD      ?= build
CONFIG     ?= config.yml
PREFIX     ?= /usr/local
DESTDIR    ?=
MESON_ARGS ?=
TEST_ARGS  ?=
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

.PHONY: all bootstrap build run test test-unit test-asan test-tsan test-release conformance fuzz bench bench-micro bench-compare bench-amqp bench-cluster soak install deb clean

# -Werror belongs to the tests and CI (STYLE.md rule 12): `make build` and `make run` leave
# warnings as warnings, as meson's defaults do for users and packagers; the test targets turn
# them into errors (an existing build dir is switched over, which recompiles it once).
WERROR = -Dwerror=true

all: build

bootstrap:
	@scripts/bootstrap

$(BUILD)/build.ninja:
	meson setup $(BUILD) --prefix=$(PREFIX) $(MESON_ARGS)

build: $(BUILD)/build.ninja
	meson compile -C $(BUILD)

run: bootstrap build
	$(BUILD)/wsgwd/wsgwd --config $(CONFIG)

# Every suite, the slow ones too: deb (the Debian packages built with -Dwerror=true, linted and
# opened; that build is the suites' optimised GCC build) and fuzz-smoke.
test: bootstrap
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) --prefix=$(PREFIX) $(WERROR) $(MESON_ARGS)
	meson configure $(BUILD) $(WERROR)
	meson compile -C $(BUILD)
	meson test -C $(BUILD) --print-errorlogs $(TEST_ARGS)

test-unit: bootstrap
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) --prefix=$(PREFIX) $(WERROR) $(MESON_ARGS)
	meson configure $(BUILD) $(WERROR)
	meson compile -C $(BUILD)
	meson test -C $(BUILD) --print-errorlogs --suite unit $(TEST_ARGS)

# AddressSanitizer + UndefinedBehaviorSanitizer build of every suite (CI runs it after `make test`).
# It is clang's build (ASAN_CXX): it compiles in half GCC's time with the sanitizers on, and it is
# CI's clang build of the whole tree, tests included, with -Werror. fuzz-smoke is left to
# `make test`: the fuzz targets are built with ASan and UBSan already; so is the deb suite, which
# builds the tree again its own way (no sanitizer there). -O1, as the ASan manual advises.
ASAN_CC  ?= clang
ASAN_CXX ?= clang++
# UBSan's vptr check is left out: it reads an object's vtable only after probing the memory through
# a pipe, which fails at the open-file limit the hostile suite drives wsgwd to, and it then reports
# valid objects (a shared_ptr's control block) as having an invalid vptr.
test-asan: bootstrap
	@test -f $(BUILD)-asan/build.ninja || CC=$(ASAN_CC) CXX=$(ASAN_CXX) meson setup $(BUILD)-asan \
		-Db_sanitize=address,undefined -Db_lundef=false -Dbench=false -Doptimization=1 \
		-Dcpp_args=-fno-sanitize=vptr -Dc_args=-fno-sanitize=vptr $(WERROR) $(MESON_ARGS)
	meson compile -C $(BUILD)-asan
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		meson test -C $(BUILD)-asan --print-errorlogs --timeout-multiplier 3 --no-suite fuzz-smoke \
		--no-suite deb $(TEST_ARGS)

# A packager's builds, by both compilers: --buildtype=release -Dwerror=true, everything but the
# tests, in $(BUILD)/release-gcc and $(BUILD)/release-clang (kept, so later runs are incremental).
# Not in CI, which covers GCC at -O2 (the deb suite) and clang (test-asan); run it after changing
# code that the optimiser may see differently (about 5 minutes of CPU per compiler).
test-release: bootstrap
	tests/release/run.sh gcc $(CURDIR) $(CURDIR)/$(BUILD)/release-gcc
	tests/release/run.sh clang $(CURDIR) $(CURDIR)/$(BUILD)/release-clang

# ThreadSanitizer build (clang's, like test-asan) of every suite but fuzz-smoke: the hub and event bus unit tests, and the
# daemon (a TSan-built wsgwd) under the integration, node and churn tests. tests/tsan.supp says
# why each suppression is there.
test-tsan: bootstrap
	@test -f $(BUILD)-tsan/build.ninja || CC=$(ASAN_CC) CXX=$(ASAN_CXX) meson setup $(BUILD)-tsan -Db_sanitize=thread \
		-Db_lundef=false -Dbench=false -Dexamples=false -Doptimization=1 $(WERROR) $(MESON_ARGS)
	meson compile -C $(BUILD)-tsan
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" meson test -C $(BUILD)-tsan \
		--print-errorlogs --timeout-multiplier 3 --no-suite fuzz-smoke --no-suite deb $(TEST_ARGS)

# RFC 6455 conformance: all 517 cases of the Autobahn|Testsuite with compression off and on,
# through wsgwd and against the libwebsockets control (tests/conformance/run.py); the suite's HTML
# report goes to $(BUILD)/conformance-report. `make test` runs sections 1-10 and a slice of 12-13.
CONFORMANCE_ARGS ?=
conformance: bootstrap build
	tests/conformance/run.py --suite all --wsgwd $(BUILD)/wsgwd/wsgwd \
		--lws-echo $(BUILD)/tests/conformance/conformance-lws-echo \
		--echo-backend $(BUILD)/tests/conformance/conformance-echo-backend \
		--outdir $(BUILD)/conformance-report $(CONFORMANCE_ARGS)

# libFuzzer targets (tests/fuzz/README.md): a clang build of their own in $(FUZZ_BUILD), then each
# target (selector, form, template, config; FUZZ_TARGETS picks some) for FUZZ_SECONDS seconds.
# New inputs go to $(FUZZ_BUILD)/corpus, crashes to tests/fuzz/crashes.
fuzz: bootstrap
	WSGW_FUZZ_BUILD=$(FUZZ_BUILD) tests/fuzz/run.sh --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The load tools (wsgw-bench, raw-fanout, grip-origin), the micro-benchmarks and wsgwd.
bench: bootstrap build
	@echo "bench: built $(BUILD)/bench/wsgw-bench, raw-fanout, grip-origin; run 'make bench-compare' or 'make bench-micro'"

# The library's micro-benchmarks (registry speed and memory).
bench-micro: bench
	$(BUILD)/bench/registry_bench --benchmark_counters_tabular=true
	$(BUILD)/bench/registry_memory

# Events/s into a private RabbitMQ node through the AMQP sink with publisher confirms.
bench-amqp: bootstrap build
	$(BUILD)/bench/amqp_bench --events 100000

# One node vs three clustered nodes on a private Redis: /send round trip and fan-out frames/s.
bench-cluster: bootstrap build
	bench/cluster-bench --build $(BUILD)

# wsgwd beside nginx+nchan, Pushpin and the raw-socket bound (about 6 minutes; installs the
# peers' Debian packages if missing). COMPARE_ARGS=--quick for a short check.
COMPARE_ARGS ?=
bench-compare: bench
	bench/compare --build $(BUILD) $(COMPARE_ARGS)

# The churn test for SOAK_MINUTES (30) minutes: wsgwd's RSS as JSON lines on stdout, then the checks.
SOAK_MINUTES ?= 30
soak: bootstrap build
	bench/soak --minutes $(SOAK_MINUTES) --wsgwd $(BUILD)/wsgwd/wsgwd

# The Debian packages wsgwd, libwsgw<soversion> and libwsgw-dev in $(BUILD)-deb, built by
# dpkg-buildpackage -us -uc -b from a clean copy of the checkout and checked by lintian.
deb: bootstrap
	scripts/build-deb $(BUILD)-deb

install: build
	meson configure $(BUILD) --prefix=$(PREFIX)
	DESTDIR=$(DESTDIR) meson install -C $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-deb $(FUZZ_BUILD)
