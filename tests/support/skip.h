#pragma once

// What a test does when something it needs is missing here (a server, a tool, an IPv6
// loopback): a visible skip, never a silent pass. Locally the test program exits 77, which meson
// reports as SKIP, and says what is missing; with CI=true in the environment (.ci/run sets it)
// the same absence is a failure, so that CI never passes without having run everything.
//
// Three ways in:
//   - a whole program needs something: a static Prerequisite, checked by the shared main
//     (tests/unit/main.cpp) before any test runs; or missingPrerequisite() from a program's own
//     main;
//   - one test case needs something the others do not: skipCase() and return;
//   - the shared main's finish() turns skipped cases into exit code 77.
//
// Thread-compatible: call from the test thread (doctest runs test cases on one thread).
#include <functional>
#include <string>

namespace wsgw::test {

/// True when the environment variable CI is set to "true" (any case), "1" or "yes": a missing
/// prerequisite is then a failure.
bool inCi();

/// The absolute path of program `name` found in $PATH (as a shell would run it), or "".
std::string findInPath(const std::string &name);

/// For a whole test program that cannot run here: prints "SKIP: <why>" and returns 77, or under
/// CI prints "FAIL: <why> ..." and returns 1. Return it from main().
int missingPrerequisite(const std::string &why);

/// Something every test of this program needs, declared at namespace scope:
///   const wsgw::test::Prerequisite redis{"redis-server is not installed (...)", [] { return ...; }};
/// The shared main checks each before running any test: `present` false means
/// missingPrerequisite(`missing`).
class Prerequisite {
public:
    Prerequisite(std::string missing, std::function<bool()> present);
};

/// Runs the registered Prerequisite checks; "" when all are present, else the first one missing.
std::string firstMissingPrerequisite();

/// Inside a doctest test case that cannot run here: under CI a failed check saying `why`;
/// otherwise a message, and the case is counted as skipped (see finish()). The caller returns
/// from the test case right after.
void skipCase(const std::string &why);

/// The exit code of a doctest program whose run returned `rc`: `rc` if anything failed, else
/// 77 when some test case called skipCase() (their reasons are printed), else 0.
int finish(int rc);

} // namespace wsgw::test
