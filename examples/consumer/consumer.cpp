// consumer: a program built the way a user of an installed libwsgw builds it.
//
// It is not part of the meson build on purpose. Against an installed libwsgw:
//
//   c++ -std=c++17 consumer.cpp $(pkg-config --cflags --libs libwsgw) -o consumer
//   ./consumer && echo ok
//
// If libwsgw is installed under a prefix pkg-config does not search by default (say /opt/wsgw),
// point it at the .pc file and the loader at the library:
//
//   export PKG_CONFIG_PATH=/opt/wsgw/lib/x86_64-linux-gnu/pkgconfig
//   c++ -std=c++17 consumer.cpp $(pkg-config --cflags --libs libwsgw) -o consumer
//   LD_LIBRARY_PATH=$(pkg-config --variable=libdir libwsgw) ./consumer
//
// tests/install/run.sh does this against a temporary DESTDIR install of the build tree.
//
// It includes nothing but <wsgw/wsgw.h>, compiles as C++17, and exits 0 when the registry
// selects what it should, 1 otherwise (saying what went wrong on stderr).

#include <wsgw/wsgw.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace {

// The least a transport must provide; this one delivers nowhere.
class NullConnection final : public wsgw::Connection {
public:
    NullConnection() : Connection(wsgw::ConnectionId::random()) {}
    wsgw::SendStatus send(const wsgw::MessagePtr &) override { return wsgw::SendStatus::Queued; }
    void close(std::uint16_t, std::string_view) override {}
    std::string remoteAddress() const override { return "127.0.0.1:1"; }
    std::string_view endpoint() const override { return "/"; }
};

int failures = 0;

void check(bool ok, const char *what) {
    if (ok) return;
    std::fprintf(stderr, "consumer: FAILED: %s\n", what);
    ++failures;
}

} // namespace

int main() {
    // The header we compiled against and the library we run against should agree.
    check(std::strcmp(wsgw::libraryVersion(), WSGW_VERSION_STRING) == 0, "libraryVersion() == WSGW_VERSION_STRING");

    wsgw::Registry registry;
    NullConnection admin, guest;
    check(registry.add(admin, {{"group", "a"}, {"role", "admin"}}), "add(admin)");
    check(registry.add(guest, {{"group", "a"}, {"role", "guest"}}), "add(guest)");
    check(!registry.add(admin, {}), "a second add() of the same id is refused");
    check(registry.size() == 2, "size() == 2");

    std::string error;
    std::optional<wsgw::Selector> sel = wsgw::Selector::parse("group=a&role=admin", &error);
    check(sel.has_value(), "Selector::parse(\"group=a&role=admin\")");
    if (sel) {
        std::vector<wsgw::ConnectionId> seen;
        std::size_t n = registry.match(*sel, [&](wsgw::Connection &c) { seen.push_back(c.id()); });
        check(n == 1 && seen.size() == 1, "group=a&role=admin selects one connection");
        check(!seen.empty() && seen.front() == admin.id(), "... and it is admin");
    }
    check(registry.count(wsgw::Selector::withTags({{"group", "a"}})) == 2, "group=a selects both");
    check(registry.tag(guest.id(), "role") == "guest", "tag(guest, role) == guest");

    check(registry.remove(admin.id()), "remove(admin)");
    check(registry.find(admin.id()) == nullptr, "admin is gone");
    // A connection leaves the registry before it is destroyed (libwsgw aborts otherwise: see
    // wsgw/connection.h).
    check(registry.remove(guest.id()), "remove(guest)");

    if (failures) return 1;
    std::printf("consumer: ok (libwsgw %s)\n", wsgw::libraryVersion());
    return 0;
}
