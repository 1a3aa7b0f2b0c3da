#include "tied_process.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace wsgw::test {

namespace {

// In the child: only async-signal-safe calls. Reports errno to the parent and exits.
[[noreturn]] void failChild(int pipeFd, int step) {
    int report[2] = {step, errno};
    ssize_t ignored = write(pipeFd, report, sizeof report);
    (void)ignored;
    _exit(127);
}

} // namespace

pid_t spawnTied(const std::vector<std::string> &argv, const SpawnOptions &options, std::string *error) {
    std::vector<char *> cargv;
    for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
    cargv.push_back(nullptr);
    std::vector<char *> cenv;
    if (options.env) {
        for (const auto &e : *options.env) cenv.push_back(const_cast<char *>(e.c_str()));
        cenv.push_back(nullptr);
    }
    char **envp = options.env ? cenv.data() : environ;

    int status[2];
    if (argv.empty() || pipe2(status, O_CLOEXEC) != 0) {
        if (error) *error = argv.empty() ? "no program given" : std::string("pipe2: ") + std::strerror(errno);
        return -1;
    }
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        if (error) *error = std::string("fork: ") + std::strerror(errno);
        close(status[0]);
        close(status[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, options.deathSignal);
        if (getppid() != parent) _exit(127); // the parent died before prctl
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr); // a test thread's blocked signals are not the child's
        for (const auto &f : options.fds) {
            int fd = f.source;
            if (fd < 0) {
                fd = open(f.path.c_str(), f.flags | O_CLOEXEC, 0644);
                if (fd < 0) failChild(status[1], 1);
            }
            if (dup2(fd, f.target) < 0) failChild(status[1], 2);
        }
        execve(cargv[0], cargv.data(), envp);
        failChild(status[1], 3);
    }
    close(status[1]);
    int report[2] = {0, 0};
    ssize_t n;
    do n = read(status[0], report, sizeof report);
    while (n < 0 && errno == EINTR);
    close(status[0]);
    if (n == static_cast<ssize_t>(sizeof report)) {
        int st = 0;
        waitpid(pid, &st, 0);
        static const char *const steps[] = {"", "open", "dup2", "execve"};
        if (error)
            *error = std::string(steps[report[0] >= 1 && report[0] <= 3 ? report[0] : 0]) + " " + argv[0] +
                     ": " + std::strerror(report[1]);
        return -1;
    }
    return pid; // EOF: the exec succeeded (close-on-exec closed the pipe)
}

} // namespace wsgw::test
