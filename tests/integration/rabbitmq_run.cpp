// The private RabbitMQ node of the tests (rabbitmq.h) for test programs in other languages
// (tests/node/backends/command_amqp_check.js): starts it, prints "port N" on stdout once it takes
// AMQP logins, and stops it (with its epmd) when stdin closes or on SIGTERM / SIGINT. Exit code 77
// when rabbitmq-server is not installed, 1 when it does not start.
// Usage: rabbitmq_run [--vhost NAME]...   (each vhost is created, guest given every permission on
// it, before the port is printed)
#include "rabbitmq.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
volatile sig_atomic_t quit = 0;
void onSignal(int) { quit = 1; }
} // namespace

int main(int argc, char **argv) {
    std::vector<std::string> vhosts;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--vhost") == 0 && i + 1 < argc) {
            vhosts.emplace_back(argv[++i]);
        } else {
            std::fprintf(stderr, "usage: %s [--vhost NAME]...\n", argv[0]);
            return 2;
        }
    }
    if (!wsgw::itest::RabbitBroker::installed()) {
        std::fprintf(stderr, "rabbitmq-server is not installed (Debian package rabbitmq-server)\n");
        return 77;
    }
    struct sigaction sa {};
    sa.sa_handler = onSignal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    wsgw::itest::RabbitBroker broker;
    std::string error;
    if (!broker.start(&error)) {
        std::fprintf(stderr, "cannot start rabbitmq-server: %s\n", error.c_str());
        return 1;
    }
    for (const std::string &vhost : vhosts) {
        if (!broker.addVhost(vhost, &error)) {
            std::fprintf(stderr, "cannot add vhost %s: %s\n", vhost.c_str(), error.c_str());
            broker.stop(true);
            return 1;
        }
    }
    std::printf("port %u\n", broker.port());
    std::fflush(stdout);
    char buf[256];
    while (!quit) {
        pollfd p{0, POLLIN, 0};
        int n = ::poll(&p, 1, 200);
        if (n > 0 && ::read(0, buf, sizeof buf) <= 0) break; // stdin closed
    }
    broker.stop(true);
    return 0;
}
