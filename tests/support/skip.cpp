#include "skip.h"

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

namespace wsgw::test {

namespace {

struct Registered {
    std::string missing;
    std::function<bool()> present;
};

std::vector<Registered> &prerequisites() {
    static std::vector<Registered> all; // filled during static initialisation, read by main
    return all;
}

std::vector<std::string> &skippedCases() {
    static std::vector<std::string> all;
    return all;
}

// The name of the test case running now, for the list of skipped ones.
std::string currentCase;

struct CaseNameListener final : doctest::IReporter {
    explicit CaseNameListener(const doctest::ContextOptions &) {}
    void report_query(const doctest::QueryData &) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats &) override {}
    void test_case_start(const doctest::TestCaseData &tc) override { currentCase = tc.m_name; }
    void test_case_reenter(const doctest::TestCaseData &) override {}
    void test_case_end(const doctest::CurrentTestCaseStats &) override {}
    void test_case_exception(const doctest::TestCaseException &) override {}
    void subcase_start(const doctest::SubcaseSignature &) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData &) override {}
    void log_message(const doctest::MessageData &) override {}
    void test_case_skipped(const doctest::TestCaseData &) override {}
};
REGISTER_LISTENER("skipped-case-names", 1, CaseNameListener);

} // namespace

bool inCi() {
    const char *ci = std::getenv("CI");
    if (!ci) return false;
    std::string v(ci);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return v == "true" || v == "1" || v == "yes";
}

std::string findInPath(const std::string &name) {
    const char *path = std::getenv("PATH");
    std::string dirs = path ? path : "";
    std::size_t at = 0;
    while (at <= dirs.size()) {
        std::size_t end = dirs.find(':', at);
        if (end == std::string::npos) end = dirs.size();
        std::string dir = dirs.substr(at, end - at);
        if (dir.empty()) dir = ".";
        std::string candidate = dir + "/" + name;
        if (access(candidate.c_str(), X_OK) == 0) return candidate;
        at = end + 1;
    }
    return {};
}

int missingPrerequisite(const std::string &why) {
    if (inCi()) {
        std::printf("FAIL: %s (CI=true: a missing prerequisite fails instead of skipping)\n", why.c_str());
        std::fflush(stdout);
        return 1;
    }
    std::printf("SKIP: %s\n", why.c_str());
    std::fflush(stdout);
    return 77;
}

Prerequisite::Prerequisite(std::string missing, std::function<bool()> present) {
    prerequisites().push_back(Registered{std::move(missing), std::move(present)});
}

std::string firstMissingPrerequisite() {
    for (const Registered &r : prerequisites())
        if (!r.present()) return r.missing;
    return {};
}

void skipCase(const std::string &why) {
    if (inCi()) {
        FAIL_CHECK(why << " (CI=true: a missing prerequisite fails instead of skipping)");
        return;
    }
    MESSAGE("SKIP: " << why);
    skippedCases().push_back("\"" + currentCase + "\": " + why);
}

int finish(int rc) {
    if (rc != 0) return rc;
    const auto &skipped = skippedCases();
    if (skipped.empty()) return 0;
    std::printf("SKIP: %zu test case(s) could not run here (the others passed):\n", skipped.size());
    for (const std::string &why : skipped) std::printf("  - %s\n", why.c_str());
    std::fflush(stdout);
    return 77;
}

} // namespace wsgw::test
