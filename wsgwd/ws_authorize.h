#pragma once

// The connect authorizer on the shard (authorizer.h has the HTTP side). libwebsockets 4.1 decides
// an upgrade inside one callback (HTTP_CONFIRM_UPGRADE) and cannot be told to wait, so the shard
// asks before lws sees the connection: while WsServer has an authorizer pool, each accepted
// socket's request head is read here first (on the shard's loop, bounded in size and time). An
// upgrade to an endpoint with authorize: is then held, not read further, while a pool thread
// asks; the answer comes back through the shard's wake-up, and the socket is handed to lws with
// the bytes read (lws_adopt_socket_vhost_readbuf) together with the tags and id it earned, or
// answered with the refusal's status and closed. Everything else is handed to lws at once.
// The shard thread never waits on the authorizer.
//
// Thread-bound to the shard, except the pool's completion, which only queues the answer and
// wakes the shard.

#include "ws_shard.h"

namespace wsgw::daemon {

/// Instead of adopting an accepted socket into lws: reads its request head first (see above).
/// Takes `fd`.
void preReadUpgrade(ShardState &s, int fd);

/// On the shard's wake-up: applies the authorizer's answers that came back.
void applyAuthorizeAnswers(ShardState &s);

/// Closes every socket still being read or held (the shard is stopping).
void dropPendingUpgrades(ShardState &s);

} // namespace wsgw::daemon
