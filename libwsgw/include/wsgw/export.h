#pragma once

/// WSGW_EXPORT marks the public API. libwsgw is built with hidden visibility by default, so
/// everything not marked stays private to the library and out of its ABI.
#if defined(_WIN32)
#if defined(WSGW_BUILDING)
#define WSGW_EXPORT __declspec(dllexport)
#else
#define WSGW_EXPORT __declspec(dllimport)
#endif
#else
#define WSGW_EXPORT __attribute__((visibility("default")))
#endif
