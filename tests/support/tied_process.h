#pragma once

// Starting a test's child process (wsgwd, redis-server, a tool) so that it cannot outlive the
// test: fork + prctl(PR_SET_PDEATHSIG) + execve. A test killed outright (meson's timeout, an
// abort) would otherwise leave its servers running with PPID 1, holding ports and CPU.
// posix_spawn cannot set the parent-death signal, hence fork.
//
// The death signal fires when the THREAD that forked exits: spawn from a thread that lives as
// long as the child (the test's main thread). It is not kept across set-user-ID binaries or a
// change of credentials (rabbitmq-server drops to its user: tests/integration/rabbitmq.cpp).
//
// Thread-safety: callable from any thread; everything is allocated before fork().

#include <string>
#include <sys/types.h>
#include <vector>

namespace wsgw::test {

struct SpawnFd {
    int target;          // the child's descriptor (0, 1, 2)
    std::string path;    // opened with `flags` (mode 0644) when source < 0
    int flags = 0;
    int source = -1;     // else dup2(source, target)
};

struct SpawnOptions {
    std::vector<SpawnFd> fds;
    // "NAME=value" entries; nullptr = this process's environment
    const std::vector<std::string> *env = nullptr;
    int deathSignal = 9; // SIGKILL
};

// Starts argv[0] (a path, not searched in PATH). Returns the pid, or -1 with `error` set to why
// (the child's failed open or execve is reported back through a close-on-exec pipe).
pid_t spawnTied(const std::vector<std::string> &argv, const SpawnOptions &options, std::string *error);

} // namespace wsgw::test
