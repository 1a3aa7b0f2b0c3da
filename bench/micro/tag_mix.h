#pragma once

// The tag mix every micro-benchmark uses. Connection i of n carries three tags:
//   group=g<i % (n/100)>  so each group has 100 members,
//   role=r<i % 4>         four large lists of n/4,
//   user=u<i>             unique per connection (or a 36-character UUID string, see UserStyle).
// With n/100 a multiple of 4, every member of group gX has role r<X % 4>, so the selector
// group=gX&role=r<X % 4> selects exactly the 100 members of gX.

#include <wsgw/connection_id.h>
#include <wsgw/tags.h>

#include <algorithm>
#include <cstddef>
#include <string>

namespace wsgw::bench {

enum class UserStyle {
    Short, ///< "u123456"
    Uuid,  ///< "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
};

inline std::size_t groupCount(std::size_t n) { return std::max<std::size_t>(1, n / 100); }

inline std::string groupName(std::size_t group) { return "g" + std::to_string(group); }
inline std::string roleName(std::size_t role) { return "r" + std::to_string(role); }

/// The initial tags of connection `i` of `n`; `id` supplies the UUID for UserStyle::Uuid.
inline TagList tagsFor(std::size_t i, std::size_t n, ConnectionId id, UserStyle style = UserStyle::Short) {
    return TagList{
        {"group", groupName(i % groupCount(n))},
        {"role", roleName(i % 4)},
        {"user", style == UserStyle::Short ? "u" + std::to_string(i) : id.toString()},
    };
}

} // namespace wsgw::bench
