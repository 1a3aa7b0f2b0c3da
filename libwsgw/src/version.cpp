#include <wsgw/version.h>

namespace wsgw {

const char *libraryVersion() noexcept { return WSGW_VERSION_STRING; }

} // namespace wsgw
