// Events per second through the AMQP sink into RabbitMQ, with publisher confirms.
//
//   build/bench/amqp_bench [--events N] [--batch N] [--size BYTES] [--port PORT] [--no-queue]
//
// Without --port it starts a private RabbitMQ node (as the integration tests do: own ports,
// data in a temp dir, stopped at the end). It queues N message events on an EventBus whose only
// sink is makeAmqpSink (a durable topic exchange with a durable queue bound, so every message is
// persisted before the broker confirms it), and measures until the bus counts all N confirmed.
// Then it checks that the queue holds N messages. --no-queue binds none: the broker confirms
// unroutable messages at once without storing them, which shows the sink's own ceiling.
#include "rabbitmq.h"

#include <wsgw/sink.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

using namespace std::chrono_literals;

int main(int argc, char **argv) {
    std::size_t events = 200'000;
    std::size_t batch = 512;
    std::size_t size = 64;
    unsigned port = 0;
    bool withQueue = true;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--no-queue") == 0) {
            withQueue = false;
            continue;
        }
        auto value = [&](const char *flag) -> const char * {
            if (std::strcmp(argv[i], flag) != 0 || i + 1 >= argc) return nullptr;
            return argv[++i];
        };
        if (const char *v = value("--events"))
            events = std::strtoull(v, nullptr, 10);
        else if (const char *v2 = value("--batch"))
            batch = std::strtoull(v2, nullptr, 10);
        else if (const char *v3 = value("--size"))
            size = std::strtoull(v3, nullptr, 10);
        else if (const char *v4 = value("--port"))
            port = static_cast<unsigned>(std::strtoul(v4, nullptr, 10));
        else {
            std::fprintf(stderr, "usage: %s [--events N] [--batch N] [--size BYTES] [--port AMQP_PORT] [--no-queue]\n", argv[0]);
            return 2;
        }
    }

    std::unique_ptr<wsgw::itest::RabbitBroker> broker;
    if (port == 0) {
        if (!wsgw::itest::RabbitBroker::installed()) {
            std::fprintf(stderr, "rabbitmq-server is not installed; give --port of a running broker\n");
            return 1;
        }
        broker = std::make_unique<wsgw::itest::RabbitBroker>();
        std::string error;
        if (!broker->start(&error)) {
            std::fprintf(stderr, "%s\n", error.c_str());
            return 1;
        }
        port = broker->port();
    }

    const std::string queue = "amqp-bench-" + std::to_string(::getpid());
    wsgw::AmqpSinkOptions o;
    o.host = "127.0.0.1";
    o.port = static_cast<std::uint16_t>(port);
    o.exchange = "amqp-bench";
    if (withQueue) o.queue = queue;
    o.routingKey = "events.{tag.group:none}";
    o.headers = {{"source", "wsgw"}};
    o.node = "bench:1";
    std::string error;
    auto sink = wsgw::makeAmqpSink(o, &error);
    if (!sink) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 1;
    }
    wsgw::SinkOptions so;
    so.maxBatch = batch;
    so.maxBacklogEvents = events + 1;
    so.maxBacklogBytes = std::size_t{8} << 30;
    wsgw::EventBus bus;
    bus.addSink(std::move(sink), so);
    if (std::string why; !bus.start(&why)) {
        std::fprintf(stderr, "amqp_bench: %s\n", why.c_str());
        return 1;
    }
    while (!bus.ready()) {
        auto s = bus.stats()[0];
        if (!s.lastError.empty()) {
            std::fprintf(stderr, "cannot connect: %s\n", s.lastError.c_str());
            return 1;
        }
        std::this_thread::sleep_for(10ms);
    }

    const std::string payload(size, 'x');
    wsgw::EventSpec spec;
    spec.includeTags = {"group"};
    wsgw::Tags tags{{"group", "g1"}, {"user", "u1"}};
    auto id = wsgw::ConnectionId::random();
    auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < events; ++i) {
        wsgw::Event e = wsgw::Event::make(wsgw::EventAction::Message, id, "/connect", tags, spec);
        e.message = payload;
        bus.publish(std::move(e));
    }
    auto queued = std::chrono::steady_clock::now();
    for (;;) {
        auto s = bus.stats()[0];
        if (s.published >= events) break;
        if (std::chrono::steady_clock::now() - t0 > 600s) {
            std::fprintf(stderr, "gave up after 600 s: %llu of %zu confirmed (%s)\n",
                         static_cast<unsigned long long>(s.published), events, s.lastError.c_str());
            return 1;
        }
        std::this_thread::sleep_for(1ms);
    }
    auto done = std::chrono::steady_clock::now();
    auto stats = bus.stats()[0];
    bus.stop(0ms);

    const double secs = std::chrono::duration<double>(done - t0).count();
    std::uint32_t stored = 0;
    if (withQueue) try {
        wsgw::itest::AmqpClient admin(static_cast<std::uint16_t>(port));
        stored = admin.declareQueue(queue);
        admin.deleteQueue(queue);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "checking the queue: %s\n", e.what());
    }
    std::printf("%zu events (%zu-byte messages), batches of %zu, persistent, %s, publisher confirms\n", events,
                size, batch, withQueue ? "durable queue" : "no queue bound (nothing stored)");
    std::printf("queued in %.3f s; all confirmed after %.3f s: %.0f events/s; %llu publish failures\n",
                std::chrono::duration<double>(queued - t0).count(), secs, static_cast<double>(events) / secs,
                static_cast<unsigned long long>(stats.failures));
    if (!withQueue) return 0;
    std::printf("the queue holds %u messages\n", stored);
    return stored == events ? 0 : 1;
}
