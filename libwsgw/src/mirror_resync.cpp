#include "mirror_resync.h"

#include <wsgw/hub.h>

#include <algorithm>
#include <future>
#include <optional>

namespace wsgw {

namespace {

using Clock = std::chrono::steady_clock;

// How long a shard may take to start a step; a shard that has not started by then skips it.
constexpr auto kShardDeadline = std::chrono::seconds(2);

// Runs `fn` on every shard and waits for the answer. nullopt: the hub did not answer in time
// (a shard that started late still may run `fn`; what it touches must be shared, not borrowed).
std::optional<CountResult> onEveryShard(Hub &hub, std::function<std::size_t(Shard &)> fn) {
    auto answer = std::make_shared<std::promise<CountResult>>();
    std::future<CountResult> result = answer->get_future();
    const Deadline deadline = Clock::now() + kShardDeadline;
    hub.forEachShard(std::move(fn), [answer](CountResult r) { answer->set_value(std::move(r)); }, deadline);
    // Once the deadline has passed no shard starts it; one that started finishes a slice soon.
    if (result.wait_until(deadline + std::chrono::seconds(1)) != std::future_status::ready) return std::nullopt;
    return result.get();
}

} // namespace

// Each shard's vectors are touched by that shard's thread during a step and by the mirror's
// thread between steps (the hub's answer orders the two).
struct MirrorResync::Job {
    explicit Job(std::size_t shards) : ids(shards), next(shards, 0) {}
    std::vector<std::vector<ConnectionId>> ids; ///< [shard]: the connections to report
    std::vector<std::size_t> next;              ///< [shard]: how many of them were handled
    bool full = true;
    bool collected = false; ///< full: the ids were collected
    std::uint64_t epoch = 0;
    std::string why;
    std::size_t reported = 0;
};

MirrorResync::MirrorResync(Hub &hub, Report report) : hub_(hub), report_(std::move(report)) {}

MirrorResync::~MirrorResync() = default;

void MirrorResync::startFull(std::string why, std::uint64_t epoch) {
    job_ = std::make_shared<Job>(hub_.shardCount());
    job_->why = std::move(why);
    job_->epoch = epoch;
}

void MirrorResync::startPartial(const std::vector<std::pair<std::uint32_t, ConnectionId>> &which, std::string why) {
    if (job_ && job_->full) return;
    if (!job_) {
        job_ = std::make_shared<Job>(hub_.shardCount());
        job_->full = false;
        job_->collected = true;
        job_->why = std::move(why);
    }
    for (const auto &[shard, id] : which)
        if (shard < job_->ids.size()) job_->ids[shard].push_back(id);
}

bool MirrorResync::full() const noexcept { return job_ && job_->full; }
std::uint64_t MirrorResync::epoch() const noexcept { return job_ ? job_->epoch : 0; }
const std::string &MirrorResync::why() const noexcept {
    static const std::string none;
    return job_ ? job_->why : none;
}
std::size_t MirrorResync::reported() const noexcept { return job_ ? job_->reported : 0; }
void MirrorResync::finish() noexcept { job_.reset(); }

std::vector<ConnectionId> MirrorResync::collected() const {
    std::vector<ConnectionId> all;
    if (!job_) return all;
    for (const auto &ids : job_->ids) all.insert(all.end(), ids.begin(), ids.end());
    return all;
}

MirrorResync::Step MirrorResync::step() {
    if (!job_) return Step::Done;
    std::shared_ptr<Job> job = job_;
    std::optional<CountResult> r;
    if (!job->collected) {
        // Ids only (no tags are copied here), so this pass costs a shard little.
        r = onEveryShard(hub_, [job](Shard &s) {
            std::vector<ConnectionId> &ids = job->ids[s.index()];
            ids.clear();
            job->next[s.index()] = 0;
            s.registry().match(Selector::all(), [&](Connection &c) { ids.push_back(c.id()); });
            return ids.size();
        });
    } else {
        Report report = report_;
        r = onEveryShard(hub_, [job, report](Shard &s) {
            const std::size_t i = s.index();
            const std::vector<ConnectionId> &ids = job->ids[i];
            std::size_t &next = job->next[i];
            const std::size_t end = std::min(ids.size(), next + kSlice);
            std::size_t n = 0;
            for (; next < end; ++next) {
                Connection *c = s.registry().find(ids[next]);
                if (!c) continue; // closed since: its close is the mirror's already
                report(i, *c, s.registry().tags(c->id()));
                ++n;
            }
            return n;
        });
    }
    if (!r) {
        // A shard may still be on it: leave that job to it and start over with a fresh one.
        auto fresh = std::make_shared<Job>(hub_.shardCount());
        fresh->full = job->full;
        fresh->epoch = job->epoch;
        fresh->why = job->why;
        fresh->collected = !job->full;
        if (!job->full) fresh->ids = job->ids; // from the start: the shards' cursors are theirs still
        job_ = std::move(fresh);
        return Step::Busy;
    }
    if (r->status == CommandStatus::Stopped) {
        job_.reset();
        return Step::Stopped;
    }
    // The shards that ran it did their part (their cursors moved); the others run it next time.
    if (!job->collected) {
        if (!r->ok()) return Step::Busy;
        job->collected = true;
        return Step::Working;
    }
    job->reported += r->value;
    if (!r->ok()) return Step::Busy;
    for (std::size_t i = 0; i < job->ids.size(); ++i)
        if (job->next[i] < job->ids[i].size()) return Step::Working;
    return Step::Done;
}

} // namespace wsgw
