// spawnTied: a child cannot outlive the process that started it, and failures are reported.

#include "tied_process.h"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using wsgw::test::spawnTied;

namespace {

// Gone or a zombie (waiting for PID 1 to reap it, which a container's init may never do).
bool ended(pid_t pid) {
    if (::kill(pid, 0) != 0) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

} // namespace

TEST_CASE("a tied child ends when the process that started it is killed") {
    int pids[2];
    REQUIRE(pipe(pids) == 0);
    pid_t middle = fork();
    REQUIRE(middle >= 0);
    if (middle == 0) {
        // The "test process": starts a long sleep, reports its pid, waits to be killed.
        std::string error;
        pid_t child = spawnTied({"/bin/sleep", "60"}, {}, &error);
        ssize_t n = write(pids[1], &child, sizeof child);
        (void)n;
        pause();
        _exit(0);
    }
    close(pids[1]);
    pid_t child = -1;
    REQUIRE(read(pids[0], &child, sizeof child) == static_cast<ssize_t>(sizeof child));
    close(pids[0]);
    REQUIRE(child > 0);
    CHECK_FALSE(ended(child));

    ::kill(middle, SIGKILL); // as meson does on a timeout
    int st = 0;
    REQUIRE(waitpid(middle, &st, 0) == middle);
    bool gone = false;
    for (int i = 0; i < 250 && !gone; ++i) { // bounded: 5 s
        gone = ended(child);
        if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!gone) ::kill(child, SIGKILL);
    CHECK(gone);
}

TEST_CASE("a program that cannot start is an error, not a pid") {
    std::string error;
    CHECK(spawnTied({"/nonexistent/program"}, {}, &error) == -1);
    CHECK(error == "execve /nonexistent/program: No such file or directory");

    wsgw::test::SpawnOptions options;
    options.fds = {{1, "/nonexistent/dir/out", O_WRONLY | O_CREAT}};
    CHECK(spawnTied({"/bin/true"}, options, &error) == -1);
    CHECK(error == "open /bin/true: No such file or directory");
}

TEST_CASE("output goes where the options say, and the exit status is the program's") {
    char dir[] = "/tmp/tied_process_test.XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    std::string out = std::string(dir) + "/out";
    wsgw::test::SpawnOptions options;
    options.fds = {{1, out, O_WRONLY | O_CREAT | O_TRUNC}, {2, "", 0, 1}};
    std::vector<std::string> env{"WORD=tied"};
    options.env = &env;
    std::string error;
    pid_t pid = spawnTied({"/bin/sh", "-c", "echo $WORD; echo err >&2; exit 3"}, options, &error);
    REQUIRE(pid > 0);
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 3);
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(text == "tied\nerr\n");
    ::unlink(out.c_str());
    ::rmdir(dir);
}
