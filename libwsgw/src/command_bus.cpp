#include <wsgw/command_bus.h>

namespace wsgw {

CommandReader::~CommandReader() = default;

} // namespace wsgw
