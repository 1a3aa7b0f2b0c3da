#pragma once

#include <wsgw/event.h>
#include <wsgw/export.h>
#include <wsgw/tags.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw {

/// A name with placeholders, for stream names and routing keys:
///  - `{tag.NAME}` the connection's tag NAME;
///  - `{json.VAR}` the variable VAR extracted from the message (json_extract_vars);
///  - either with `:default` before the closing brace: `{json.command:unknown}`;
///  - a missing value with no default becomes "_".
/// Names match [a-zA-Z0-9_]+; a default may hold anything but '}'. Braces that do not open
/// `{tag.` or `{json.` are literal text, so Redis Cluster hash tags (`{user}:events`) work.
/// Value type; thread-compatible.
class WSGW_EXPORT Template {
public:
    Template() = default;

    /// Parses `text`. An unterminated placeholder or an invalid name returns nullopt with a
    /// message naming the column (1-based) in `*error`.
    [[nodiscard]] static std::optional<Template> parse(std::string_view text, std::string *error = nullptr);

    std::string render(const Event &event) const;
    std::string render(const Tags &tags, const Vars &vars) const;

    /// The tag names and variable names the template reads, without duplicates.
    std::vector<std::string> tagNames() const;
    std::vector<std::string> varNames() const;

    const std::string &source() const noexcept { return source_; }
    /// True when there are no placeholders: render() always returns source().
    bool isConstant() const noexcept;

private:
    enum class Kind { Literal, Tag, Var };
    struct Part {
        Kind kind;
        std::string text; ///< the literal, or the name
        std::optional<std::string> fallback;
    };
    template <class TagLookup, class VarLookup>
    std::string renderWith(TagLookup tag, VarLookup var) const;

    std::string source_;
    std::vector<Part> parts_;
};

} // namespace wsgw
