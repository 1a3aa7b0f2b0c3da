#include "yaml_cpp_workarounds.h"

#include <yaml-cpp/eventhandler.h>

#include <cstddef>
#include <sstream>

namespace wsgw::daemon {

namespace {

// Receives a document's events and drops them.
class IgnoreEvents final : public YAML::EventHandler {
public:
    void OnDocumentStart(const YAML::Mark &) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark &, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t, const std::string &) override {}
    void OnSequenceStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

} // namespace

std::optional<YAML::Mark> endlessDocuments(const std::string &text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    IgnoreEvents events;
    std::size_t documents = 0;
    while (parser.HandleNextDocument(events)) {
        if (++documents <= text.size() + 2) continue;
        // Where the stray ',' is: the first one at the start of a line's content.
        YAML::Mark mark;
        mark.line = 0;
        mark.column = 0;
        for (std::size_t i = 0, col = 0; i < text.size(); ++i) {
            char c = text[i];
            if (c == '\n') {
                ++mark.line;
                col = 0;
                continue;
            }
            if (c == ',') {
                mark.column = static_cast<int>(col);
                mark.pos = static_cast<int>(i);
                return mark;
            }
            ++col;
        }
        mark.line = 0;
        return mark;
    }
    return std::nullopt;
}

} // namespace wsgw::daemon
