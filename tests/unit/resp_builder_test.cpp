// RespBuilder (libwsgw/src/redis_client.h), which formats the stream sink's XADDs, against
// hiredis's own formatter: the same bytes for the same arguments, binary and empty ones too.
#include "redis_client.h"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

std::string hiredisFormat(const std::vector<std::string> &args) {
    std::vector<const char *> argv;
    std::vector<std::size_t> argl;
    for (const auto &a : args) {
        argv.push_back(a.data());
        argl.push_back(a.size());
    }
    char *out = nullptr;
    const int len = redisFormatCommandArgv(&out, static_cast<int>(args.size()), argv.data(), argl.data());
    REQUIRE(len > 0);
    std::string s(out, static_cast<std::size_t>(len));
    redisFreeCommand(out);
    return s;
}

} // namespace

TEST_CASE("RespBuilder writes what hiredis writes") {
    wsgw::RespBuilder b;
    b.command(4);
    b.arg("XADD");
    b.arg("s");
    b.arg(std::string_view());
    b.arg(std::uint64_t{0});
    CHECK(b.data() == hiredisFormat({"XADD", "s", "", "0"}));

    std::mt19937 rng(7);
    std::string expected;
    b.clear();
    for (int cmd = 0; cmd < 200; ++cmd) {
        std::vector<std::string> args;
        const std::size_t n = 1 + rng() % 20;
        b.command(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (rng() % 3 == 0) {
                const std::uint64_t v = (std::uint64_t{rng()} << 32 | rng()) >> (rng() % 64);
                args.push_back(std::to_string(v));
                b.arg(v);
            } else {
                std::string a(rng() % 300, '\0');
                for (char &c : a) c = static_cast<char>(rng()); // any byte: \r, \n and NUL too
                args.push_back(a);
                b.arg(a);
            }
        }
        expected += hiredisFormat(args);
    }
    CHECK(b.data() == expected);
    b.arg(std::numeric_limits<std::uint64_t>::max());
    CHECK(b.data().substr(expected.size()) == "$20\r\n18446744073709551615\r\n");
}
