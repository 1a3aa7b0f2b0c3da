// wsgw::percentDecode (wsgw/tags.h): the one percent-decoder of the tree, used by the form and
// selector parsers and by wsgwd's Redis and AMQP URLs.
#include <wsgw/tags.h>

#include <doctest/doctest.h>

#include <cstddef>
#include <optional>
#include <string>

using wsgw::percentDecode;

namespace {

struct Case {
    const char *text;
    std::optional<std::string> plain; ///< plusIsSpace false (URL components)
    std::optional<std::string> form;  ///< plusIsSpace true (form bodies, query strings)
    std::size_t bad;                  ///< the offset of the malformed escape, when nullopt
};

const Case kCases[] = {
    {"", "", "", 0},
    {"plain", "plain", "plain", 0},
    {"a+b", "a+b", "a b", 0},
    {"%2B+%2b", "+++", "+ +", 0},
    {"%41%62%7a%7A", "Abzz", "Abzz", 0},
    {"p%40ss%3Aw%2Fd", "p@ss:w/d", "p@ss:w/d", 0},
    {"%C3%A9", "\xC3\xA9", "\xC3\xA9", 0},
    {"%00", std::string(1, '\0'), std::string(1, '\0'), 0},
    {"%ff%FF", "\xff\xff", "\xff\xff", 0},
    {"%", std::nullopt, std::nullopt, 0},
    {"ab%4", std::nullopt, std::nullopt, 2},
    {"ok%zz", std::nullopt, std::nullopt, 2},
    {"%4g", std::nullopt, std::nullopt, 0},
    {"%%41", std::nullopt, std::nullopt, 0},
    {"x%41%", std::nullopt, std::nullopt, 4},
    {"a+%g1", std::nullopt, std::nullopt, 2},
};

} // namespace

TEST_CASE("percentDecode: escapes, '+' by mode, malformed escapes with their offset") {
    for (const Case &c : kCases) {
        CAPTURE(c.text);
        for (bool plusIsSpace : {false, true}) {
            CAPTURE(plusIsSpace);
            const std::optional<std::string> &want = plusIsSpace ? c.form : c.plain;
            std::size_t bad = 12345;
            auto got = percentDecode(c.text, plusIsSpace, &bad);
            CHECK(got == want);
            if (want)
                CHECK(bad == 12345); // untouched on success
            else
                CHECK(bad == c.bad);
            CHECK(percentDecode(c.text, plusIsSpace) == want); // no offset wanted: fine
        }
    }
}

TEST_CASE("percentDecode: embedded NULs in the input are copied") {
    std::string text("a\0%41", 5);
    CHECK(percentDecode(text, false) == std::string("a\0A", 3));
}

TEST_CASE("formDecode is percentDecode with '+' as a space") {
    for (const Case &c : kCases) {
        CAPTURE(c.text);
        CHECK(wsgw::formDecode(c.text) == c.form);
    }
}
