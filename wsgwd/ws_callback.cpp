// The libwebsockets callback of a shard's vhost: where lws tells us about requests, upgrades,
// frames, writability, closes, the listening socket and wake-ups, and we hand each to the part
// of the shard that deals with it.

#include "deflate_offer.h"
#include "lws_workarounds.h"
#include "ws_authorize.h"
#include "ws_connection.h"
#include "ws_handshake.h"
#include "ws_jwt_admission.h"
#include "ws_shard.h"

#include <ev.h>
#include <spdlog/spdlog.h>

#include <strings.h>

#include <cstring>

namespace wsgw::daemon {

namespace {

std::string headerValue(lws *wsi, lws_token_indexes token) {
    int len = lws_hdr_total_length(wsi, token);
    if (len <= 0) return {};
    std::string out(static_cast<std::size_t>(len) + 1, '\0');
    int n = lws_hdr_copy(wsi, out.data(), len + 1, token);
    if (n < 0) return {};
    out.resize(std::strlen(out.c_str())); // trimLongExtensionOffers may have cut it with a NUL
    return out;
}

int refuse(lws *wsi, Refusal why, unsigned status, const char *message) {
    shardOf(wsi).counters.upgradesRefused[static_cast<std::size_t>(why)].add();
    if (lws_return_http_status(wsi, status, message)) return -1;
    return 1; // >0 from CONFIRM_UPGRADE: we answered; lws completes the transaction
}

// 426 with the version we speak: lws_return_http_status cannot add a header.
int refuseVersion(lws *wsi, const std::string &message) {
    shardOf(wsi).counters.upgradesRefused[static_cast<std::size_t>(Refusal::Version)].add();
    const std::string body = message + "\n";
    unsigned char buf[LWS_PRE + 512];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (lws_add_http_header_status(wsi, 426, &p, end) ||
        lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>("sec-websocket-version:"),
                                    reinterpret_cast<const unsigned char *>("13"), 2, &p, end) ||
        lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char *>("content-type:"),
                                    reinterpret_cast<const unsigned char *>("text/plain"), 10, &p, end) ||
        lws_add_http_header_content_length(wsi, body.size(), &p, end) || lws_finalize_http_header(wsi, &p, end))
        return -1;
    if (lws_write(wsi, start, static_cast<std::size_t>(p - start), LWS_WRITE_HTTP_HEADERS) < 0) return -1;
    std::string out(LWS_PRE, '\0');
    out += body;
    if (lws_write(wsi, reinterpret_cast<unsigned char *>(out.data()) + LWS_PRE, body.size(), LWS_WRITE_HTTP_FINAL) < 0)
        return -1;
    return 1;
}

// LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: the last look at an upgrade request before lws takes it.
int confirmUpgrade(lws *wsi) {
    ShardState &s = shardOf(wsi);
    if (s.adopting && s.adopting->first == lws_get_socket_fd(wsi)) { // see ShardState::adopting
        s.admitted[wsi] = std::move(s.adopting->second);
        s.adopting.reset();
    }
    const std::string path = headerValue(wsi, WSI_TOKEN_GET_URI);
    const std::string connection = headerValue(wsi, WSI_TOKEN_CONNECTION);
    const std::string key = headerValue(wsi, WSI_TOKEN_KEY);
    const std::string version = headerValue(wsi, WSI_TOKEN_VERSION);
    const std::string origin = headerValue(wsi, WSI_TOKEN_ORIGIN);
    const std::string protocol = headerValue(wsi, WSI_TOKEN_PROTOCOL);
    std::size_t index = 0;
    const WsEndpoint *e = s.endpointFor(path, &index);
    const WsServerOptions &o = s.settings;
    const bool atCapacity =
        e && ((o.maxConnections && totalConnections(s.server) >= o.maxConnections) ||
              (e->maxConnections && endpointConnections(s.server, index) >= e->maxConnections));
    ServerState state;
    state.draining = s.draining.load(std::memory_order_relaxed);
    state.atCapacity = atCapacity;
    state.eventsPaused = e && s.shard.hub().events().paused(e->path); // only its backends' backpressure
    UpgradeVerdict v = checkUpgrade({path, connection, key, version, origin, protocol}, e, state);
    if (v.status == 426) return refuseVersion(wsi, v.message);
    if (v.status != 0) return refuse(wsi, v.reason, v.status, v.message.c_str());
    if (!v.subprotocol.empty() && !echoSubprotocol(s.echoedProtocol, sizeof s.echoedProtocol, v.subprotocol))
        return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "invalid Sec-WebSocket-Protocol");
    if (e->authorize) {
        // Admitted by the authorizer before lws saw it (ws_authorize.h); anything else here
        // was not asked (an endpoint given authorize: by a reload without a pool): fail closed.
        auto it = s.admitted.find(wsi);
        if (it == s.admitted.end() || !it->second.authorized)
            return refuse(wsi, Refusal::Authorizer, 503, "authorization unavailable; retry later");
    }
    if (e->jwt) {
        std::string why;
        if (!admitByJwt(s, wsi, *e, &why)) return refuse(wsi, Refusal::Unauthorized, 401, why.c_str());
    }
    return 0;
}

// LWS_CALLBACK_ESTABLISHED: the connection joins its shard.
int established(lws *wsi, SessionStorage *session) {
    ShardState &s = shardOf(wsi);
    std::size_t index = 0;
    const WsEndpoint *e = s.endpointFor(headerValue(wsi, WSI_TOKEN_GET_URI), &index);
    if (!e || !session) return -1;
    // set_tags, then what the upgrade earned (JWT claims, the authorizer's tags) over them.
    TagList tags;
    std::optional<ConnectionId> id;
    if (auto it = s.admitted.find(wsi); it != s.admitted.end()) {
        tags = e->setTags;
        tags.insert(tags.end(), it->second.tags.begin(), it->second.tags.end());
        id = it->second.id;
        s.admitted.erase(it);
    }
    auto *conn = new (session->conn) WsConnection(s, wsi, index, session->compressed, id);
    if (!s.shard.open(*conn, tags.empty() ? e->setTags : tags, e->events)) { // an id clash, or out of memory
        conn->~WsConnection();
        return -1;
    }
    // Registered: from here on CLOSED undoes it all, whatever fails below.
    session->live = true;
    s.connections.fetch_add(1, std::memory_order_relaxed);
    s.counters.connectionsOpened.add();
    s.counters.endpointConnections[index].add(1);
    conn->linkIdle();
    scheduleLifetime(s, conn->id());
    if (session->compressed) {
        enlargeInflateBuffer(wsi);
        if (session->deflateWindow) limitDeflateWindow(wsi, session->deflateWindow);
    }
    return 0;
}

// LWS_CALLBACK_CLOSED: the connection leaves its shard.
void closed(lws *wsi, SessionStorage *session) {
    ShardState &s = shardOf(wsi);
    WsConnection *conn = session->get();
    conn->unlinkIdle();
    s.shard.closed(*conn, conn->ep().events);
    s.connections.fetch_sub(1, std::memory_order_relaxed);
    s.counters.connectionsClosed.add();
    s.counters.endpointConnections[conn->endpointIndex()].add(-1);
    conn->~WsConnection();
    session->live = false;
}

// A plain HTTP request on the WebSocket port: nothing but upgrades is served here. A GET is
// answered and may keep its connection alive (lws closes it after keepalive_timeout); any other
// request is answered and its connection closed at once: its body is never waited for, however
// slowly it comes.
int plainHttp(lws *wsi) {
    ShardState &s = shardOf(wsi);
    char *uri = nullptr;
    int uriLen = 0;
    int method = lws_http_get_uri_and_method(wsi, &uri, &uriLen);
    std::string path = uri && uriLen > 0 ? std::string(uri, static_cast<std::size_t>(uriLen)) : std::string();
    bool known = s.endpointFor(path, nullptr) != nullptr;
    s.counters.upgradesRefused[static_cast<std::size_t>(known ? Refusal::NotWebSocket : Refusal::NotFound)].add();
    unsigned status = !known ? unsigned(HTTP_STATUS_NOT_FOUND) : method == LWSHUMETH_GET ? 426u : 405u;
    if (lws_return_http_status(wsi, status,
                               !known           ? "not found"
                               : status == 426 ? "this endpoint speaks WebSocket only: send a GET with Upgrade: websocket"
                                               : "a WebSocket upgrade is a GET"))
        return -1;
    if (method != LWSHUMETH_GET) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

// LWS_CALLBACK_EVENT_WAIT_CANCELLED: a wake-up; runs the inbox.
void wokenUp(lws *wsi) {
    // Sent to every protocol of the vhost; run the inbox once per wake-up. lws copies the
    // protocol table, but the name pointers are ours.
    ShardState &s = shardOf(wsi);
    const lws_protocols *p = lws_get_protocol(wsi);
    if (p && p->name != s.protocols[0].name) return;
    if (s.quit.load(std::memory_order_acquire)) {
        ev_break(s.loop, EVBREAK_ALL);
        return;
    }
    s.shard.drain();
    applyAuthorizeAnswers(s);
    // Connections cannot go away during a drain, so the list holds only live ones.
    for (WsConnection *c : s.toFlush) c->flushPending();
    s.toFlush.clear();
    resumeReadersIfDue(s);
}

} // namespace

int callback(lws *wsi, lws_callback_reasons reason, void *user, void *in, std::size_t len) {
    try {
        auto *session = static_cast<SessionStorage *>(user);
        switch (reason) {
        case LWS_CALLBACK_HTTP:
            return plainHttp(wsi);

        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            if (!in || strcasecmp(static_cast<const char *>(in), "websocket") != 0)
                return refuse(wsi, Refusal::BadRequest, HTTP_STATUS_BAD_REQUEST, "only WebSocket upgrades are served");
            trimLongExtensionOffers(wsi);
            return confirmUpgrade(wsi);

        case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: {
            ShardState &s = shardOf(wsi);
            const WsEndpoint *e = s.endpointFor(headerValue(wsi, WSI_TOKEN_GET_URI), nullptr);
            if (!e || !e->compression) return 1; // refuse the extension
            // server_max_window_bits is honoured on ESTABLISHED (limitDeflateWindow). Declined:
            // a malformed value (RFC 7692 7.1.2.1), and 8, since zlib cannot deflate raw with
            // an 8-bit window (it would use 9, which such a client cannot inflate).
            const DeflateOffer offer = firstDeflateOffer(headerValue(wsi, WSI_TOKEN_EXTENSIONS));
            if (offer.serverMaxWindowBits < 0 || offer.serverMaxWindowBits == 8) return 1;
            if (session && in && std::strcmp(static_cast<const char *>(in), "permessage-deflate") == 0) {
                session->compressed = true;
                session->deflateWindow = offer.serverMaxWindowBits;
            }
            return 0;
        }

        case LWS_CALLBACK_ADD_HEADERS:
            // The 101 of a connection that accepted server_max_window_bits names it.
            if (session && session->compressed && session->deflateWindow && in &&
                !echoServerWindowBits(*static_cast<lws_process_html_args *>(in), session->deflateWindow))
                return 1; // not the response lws 4.1.6 writes: fail rather than break RFC 7692
            return 0;

        case LWS_CALLBACK_ESTABLISHED:
            return established(wsi, session);

        case LWS_CALLBACK_RECEIVE:
            if (!session || !session->get()) return -1;
            return session->get()->onReceive(in, len);

        case LWS_CALLBACK_RECEIVE_PONG:
            if (session && session->get()) session->get()->touch();
            return 0;

        case LWS_CALLBACK_SERVER_WRITEABLE:
            if (!session || !session->get()) return 0;
            return session->get()->onWriteable();

        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if (!session || !session->get()) return 0;
            return session->get()->onPeerClose(in, len);

        case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
            // lws took a close we asked for (a -1 after lws_close_reason): it writes the close
            // frame and waits for the client's.
            if (session && session->get()) session->get()->closeHandedOver();
            return 0;

        case LWS_CALLBACK_CLOSED:
            if (session && session->get()) closed(wsi, session);
            return 0;

        case LWS_CALLBACK_RAW_RX_FILE: {
            ShardState &s = shardOf(wsi);
            if (wsi == s.listener) acceptPending(s);
            return 0;
        }

        case LWS_CALLBACK_RAW_CLOSE_FILE: {
            ShardState &s = shardOf(wsi);
            if (wsi == s.listener) {
                s.listener = nullptr;
                s.listenFd = -1;
            }
            return 0;
        }

        case LWS_CALLBACK_WSI_DESTROY: {
            ShardState &s = shardOf(wsi);
            if (!s.admitted.empty()) s.admitted.erase(wsi);
            return 0;
        }

        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            wokenUp(wsi);
            return 0;

        default:
            return 0;
        }
    } catch (const std::exception &e) {
        spdlog::error("websocket callback {}: {}", static_cast<int>(reason), e.what());
        return -1;
    } catch (...) {
        spdlog::error("websocket callback {}: unknown exception", static_cast<int>(reason));
        return -1;
    }
}

} // namespace wsgw::daemon
