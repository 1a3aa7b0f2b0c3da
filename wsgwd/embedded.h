#pragma once

// Files served from the binary, embedded at build time by wsgwd/embed_text.py (wsgwd/meson.build).

#include <string_view>

namespace wsgw::daemon::embedded {

/// wsgwd/openapi/openapi.json: the OpenAPI 3.1 document of the control API (GET /v1/openapi.json).
extern const std::string_view openApiJson;
/// wsgwd/dashboard/index.html: the dashboard page (GET /dashboard), self-contained.
extern const std::string_view dashboardHtml;

} // namespace wsgw::daemon::embedded
