// The main of the doctest programs (unit and integration): checks the program's prerequisites
// (tests/support/skip.h), runs the tests, and exits 77 (meson: SKIP) when some could not run
// here, or fails instead under CI=true.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "skip.h"

#include <string>

int main(int argc, char **argv) {
    doctest::Context context(argc, argv);
    if (std::string missing = wsgw::test::firstMissingPrerequisite(); !missing.empty())
        return wsgw::test::missingPrerequisite(missing);
    int rc = context.run();
    if (context.shouldExit()) return rc; // --help, --list-test-cases, ...
    return wsgw::test::finish(rc);
}
