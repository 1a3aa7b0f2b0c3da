// The control of the conformance suite: a minimal echo server on libwebsockets itself, with the
// libwebsockets settings wsgwd uses (the same permessage-deflate extension line, receive buffer
// and write size, libev loop, no validity timers), so that a case which is not OK through wsgwd
// and not OK here either is libwebsockets', and one that is OK here is ours.
//
// Differences from wsgwd, on purpose: it listens itself (wsgwd adopts sockets it accepted), and
// libwebsockets checks UTF-8 (LWS_SERVER_OPTION_VALIDATE_UTF8; wsgwd checks it itself), so that
// the control shows libwebsockets' own answers to the UTF-8 cases. Each message is written back
// whole once it is complete, in order.
//
//   conformance-lws-echo --port N [--deflate]
//
// Prints "listening on N" when ready; runs until SIGTERM or SIGINT.

#include <libwebsockets.h>

#include <ev.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>

namespace {

// As in wsgwd (ws_shard.h): the per-connection receive buffer and the write size.
constexpr std::size_t kRxBufferSize = 512;
constexpr std::size_t kTxPacketSize = 64 * 1024 + LWS_PRE + 16;

struct Session {
    std::string rx;
    bool rxBinary = false;
    std::deque<std::string> out; // each with LWS_PRE bytes of headroom
    std::deque<bool> outBinary;
    std::string inflight; // compressed writes read their input until the next WRITEABLE
};

int callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, std::size_t len) {
    auto **slot = static_cast<Session **>(user);
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        *slot = new Session;
        return 0;
    case LWS_CALLBACK_CLOSED:
        delete *slot;
        *slot = nullptr;
        return 0;
    case LWS_CALLBACK_RECEIVE: {
        Session *s = *slot;
        if (!s) return -1;
        if (lws_is_first_fragment(wsi)) {
            s->rx.assign(LWS_PRE, '\0');
            s->rxBinary = lws_frame_is_binary(wsi) != 0;
        }
        s->rx.append(static_cast<const char *>(in), len);
        if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) return 0;
        s->out.push_back(std::move(s->rx));
        s->outBinary.push_back(s->rxBinary);
        s->rx.clear();
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        Session *s = *slot;
        if (!s) return 0;
        s->inflight.clear();
        if (s->out.empty()) return 0;
        s->inflight = std::move(s->out.front());
        bool binary = s->outBinary.front();
        s->out.pop_front();
        s->outBinary.pop_front();
        auto *p = reinterpret_cast<unsigned char *>(s->inflight.data()) + LWS_PRE;
        if (lws_write(wsi, p, s->inflight.size() - LWS_PRE, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < 0)
            return -1;
        if (!s->out.empty()) lws_callback_on_writable(wsi);
        return 0;
    }
    default:
        return 0;
    }
}

struct ev_loop *loop = nullptr;

void onSignal(struct ev_loop *l, ev_signal *, int) { ev_break(l, EVBREAK_ALL); }

} // namespace

int main(int argc, char **argv) {
    int port = 0;
    bool deflate = false;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--port") && i + 1 < argc)
            port = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--deflate"))
            deflate = true;
        else {
            std::fprintf(stderr, "usage: %s --port N [--deflate]\n", argv[0]);
            return 2;
        }
    }
    if (port <= 0) {
        std::fprintf(stderr, "--port is required\n");
        return 2;
    }
    lws_set_log_level(LLL_ERR, nullptr);

    static const lws_extension extensions[] = {
        {"permessage-deflate", lws_extension_callback_pm_deflate, "permessage-deflate; client_max_window_bits"},
        {nullptr, nullptr, nullptr},
    };
    static lws_protocols protocols[2] = {};
    protocols[0].name = "echo";
    protocols[0].callback = callback;
    protocols[0].per_session_data_size = sizeof(Session *);
    protocols[0].rx_buffer_size = kRxBufferSize;
    protocols[0].tx_packet_size = kTxPacketSize;

    loop = ev_loop_new(static_cast<unsigned>(EVBACKEND_EPOLL) | static_cast<unsigned>(EVFLAG_NOENV));
    void *foreign[1] = {loop};
    lws_context_creation_info info{};
    info.options = LWS_SERVER_OPTION_LIBEV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.foreign_loops = foreign;
    info.port = port;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.extensions = deflate ? extensions : nullptr;
    info.keepalive_timeout = 5;
    info.timeout_secs_ah_idle = 10;
    static const lws_retry_bo_t noValidityTimers{};
    info.retry_and_idle_policy = &noValidityTimers;
    lws_context *context = lws_create_context(&info);
    if (!context) {
        std::fprintf(stderr, "cannot create the libwebsockets context on port %d\n", port);
        return 1;
    }
    ev_signal term, intr;
    ev_signal_init(&term, onSignal, SIGTERM);
    ev_signal_init(&intr, onSignal, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    std::printf("listening on %d\n", port);
    std::fflush(stdout);
    ev_run(loop, 0);
    lws_context_destroy(context);
    ev_loop_destroy(loop);
    return 0;
}
