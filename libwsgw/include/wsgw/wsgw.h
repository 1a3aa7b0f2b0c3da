#pragma once

/// The whole public API of libwsgw. Compiles as C++17 and includes nothing beyond the standard
/// library.

#include <wsgw/cluster.h>
#include <wsgw/command_bus.h>
#include <wsgw/connection.h>
#include <wsgw/connection_id.h>
#include <wsgw/event.h>
#include <wsgw/export.h>
#include <wsgw/hub.h>
#include <wsgw/message.h>
#include <wsgw/mirror.h>
#include <wsgw/outbound.h>
#include <wsgw/registry.h>
#include <wsgw/selector.h>
#include <wsgw/sink.h>
#include <wsgw/tags.h>
#include <wsgw/template.h>
#include <wsgw/version.h>
