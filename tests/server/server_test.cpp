// SPDX-License-Identifier: MIT
// minimal_syscall_server through its C API, with the example URL filter programs.
#include <bpftime/attach/attach.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/minimal_syscall_server.h>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <grp.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bpftime {
namespace {

struct request {
    std::string path, uri, method = "GET", host = "localhost", client = "127.0.0.1";
    bpftime_nginx_request r{};

    explicit request(std::string p) : path(std::move(p)), uri(path) {
        r.path = path.data();
        r.path_len = static_cast<uint32_t>(path.size());
        r.uri = uri.data();
        r.uri_len = static_cast<uint32_t>(uri.size());
        r.method = method.data();
        r.method_len = static_cast<uint32_t>(method.size());
        r.host = host.data();
        r.host_len = static_cast<uint32_t>(host.size());
        r.client = client.data();
        r.client_len = static_cast<uint32_t>(client.size());
        r.client_ipv4 = 0x0100007f;
    }
};

struct ServerTest : test::provider_fixture {
    ServerTest() : provider_fixture("bpftime-server-test") {}
    bpftime_server *server = nullptr;
    std::vector<std::string> logged;

    static void log(void *user, int, const char *msg) {
        static_cast<ServerTest *>(user)->logged.emplace_back(msg);
    }

    void SetUp() override {
        provider_fixture::SetUp();
        ASSERT_EQ(bpftime_server__create(name.c_str(), log, this, &server), 0);
    }
    void TearDown() override {
        bpftime_server__destroy(server);
        provider_fixture::TearDown();
    }

    // Loads an example object and attaches its program to the URL filter; returns the link.
    uint32_t attach_example(const std::string &example, uint32_t *map_id = nullptr) {
        auto obj = loader::open_elf(std::string(BPFTIME_EXAMPLES_DIR) + "/" + example + ".bpf.o");
        EXPECT_TRUE(obj.ok()) << obj.err().message;
        auto loaded = load_object(*provider, *obj);
        EXPECT_TRUE(loaded.ok()) << loaded.err().message;
        if (map_id != nullptr) {
            *map_id = loaded->maps.at(0).first;
        }
        return attach(loaded->programs.at(0).first);
    }

    uint32_t attach(uint32_t prog) {
        auto target = provider->create_attach_target(attach_type_nginx_url, "");
        auto link = provider->attach_program(prog, *target);
        EXPECT_TRUE(link.ok()) << link.err().message;
        return *link;
    }

    uint32_t program(const std::string &text) {
        auto id = provider->create_program({"p", 0, "nginx", *vm::assemble(text), {}});
        EXPECT_TRUE(id.ok()) << id.err().message;
        return *id;
    }

    void allow(uint32_t map, const std::string &prefix, uint32_t verdict) {
        std::vector<uint8_t> key(32);
        std::memcpy(key.data(), prefix.data(), prefix.size());
        auto view = seg->map_view(map);
        ASSERT_TRUE(view->write(key, {reinterpret_cast<uint8_t *>(&verdict), 4}).ok());
    }

    int filter(const std::string &path) {
        request req(path);
        return bpftime_server__filter_request(server, &req.r);
    }
};

TEST_F(ServerTest, AllowlistAcceptsAndRefusesByPrefix) {
    EXPECT_EQ(filter("/api/users"), 0) << "nothing attached: accept";
    uint32_t map = 0;
    attach_example("url_allowlist", &map);
    allow(map, "/api/", 0);
    allow(map, "/old/", 410);
    EXPECT_EQ(filter("/api/users"), 0);
    EXPECT_EQ(filter("/api/"), 0);
    EXPECT_EQ(filter("/apix/"), 403);
    EXPECT_EQ(filter("/old/page"), 410);
    EXPECT_EQ(filter("/"), 403);
    EXPECT_EQ(bpftime_server__attached(server), 1);
}

TEST_F(ServerTest, PolicyChangesTakeEffectOnTheNextRequest) {
    uint32_t map = 0;
    uint32_t link = attach_example("url_allowlist", &map);
    EXPECT_EQ(filter("/api/x"), 403);
    allow(map, "/api/", 0);
    EXPECT_EQ(filter("/api/x"), 0) << "a map change needs no re-instantiation";
    ASSERT_TRUE(provider->disable_link(link).ok());
    EXPECT_EQ(filter("/nope"), 0) << "a disabled link no longer runs";
    ASSERT_TRUE(provider->enable_link(link).ok());
    EXPECT_EQ(filter("/nope"), 403);
    // A second program runs after the first, in link order; the first refusal decides.
    attach(program("mov %r0, 451\nexit\n"));
    EXPECT_EQ(filter("/api/x"), 451);
    EXPECT_EQ(filter("/nope"), 403);
}

TEST_F(ServerTest, ReturnValuesMapToStatuses) {
    uint32_t link = attach(program("mov %r0, 7\nexit\n"));
    EXPECT_EQ(filter("/"), 403) << "other non-zero values refuse with 403";
    ASSERT_TRUE(provider->destroy_object(link).ok());
    attach(program("mov %r0, 599\nexit\n"));
    EXPECT_EQ(filter("/"), 599);
}

// A program attached to the URL filter reads its link's cookie (get_attach_cookie), as a
// probe's program does.
TEST_F(ServerTest, ProgramsReadTheirLinksCookie) {
    auto target = provider->create_attach_target(attach_type_nginx_url, "");
    ASSERT_TRUE(target.ok()) << target.err().message;
    auto link = provider->attach_program(program("call 174\nexit\n"), *target, 451);
    ASSERT_TRUE(link.ok()) << link.err().message;
    EXPECT_EQ(filter("/"), 451);
    ASSERT_TRUE(provider->destroy_object(*link).ok());
    attach(program("call 174\nexit\n"));
    EXPECT_EQ(filter("/"), 0) << "a link made without a cookie has cookie 0";
}

TEST_F(ServerTest, ProgramsReadTheRequest) {
    // Returns 400 + the length of the path when the method starts with 'G'.
    attach(program("ldxdw %r2, [%r1+16]\nldxb %r2, [%r2]\nmov %r0, 0\njne %r2, 0x47, out\n"
                   "ldxw %r0, [%r1+40]\nadd %r0, 400\nout:\nexit\n"));
    EXPECT_EQ(filter("/abc"), 404);
    EXPECT_EQ(filter("/"), 401);
}

TEST_F(ServerTest, WritingTheRequestIsAFault) {
    attach(program("stb [%r1], 1\nmov %r0, 0\nexit\n"));
    EXPECT_EQ(filter("/"), -EFAULT);
}

TEST_F(ServerTest, FaultsAreErrorsLoggedOncePerCause) {
    attach(program("ldxdw %r0, [%r1+4096]\nexit\n"));
    for (int i = 0; i < 100; i++) {
        EXPECT_EQ(filter("/"), -EFAULT);
    }
    EXPECT_NE(std::string(bpftime_server__last_error(server)).find("outside the memory"),
              std::string::npos);
    size_t faults = std::count_if(logged.begin(), logged.end(), [](const std::string &m) {
        return m.find("outside the memory") != std::string::npos;
    });
    EXPECT_EQ(faults, 1u) << "logged once, not per request";

    auto snap = seg->read_all();
    EXPECT_EQ(snap->links.back().faults, 100u);
}

TEST_F(ServerTest, RunawayLoopsStopAtTheBudget) {
    attach(program("mov %r0, 0\nloop:\nja loop\n"));
    EXPECT_EQ(filter("/"), -ETIMEDOUT);
}

TEST_F(ServerTest, RemovedSegmentFailsUntilOneAppearsAgain) {
    uint32_t map = 0;
    attach_example("url_allowlist", &map);
    allow(map, "/api/", 0);
    EXPECT_EQ(filter("/api/"), 0);
    provider.reset();
    seg.reset();
    ASSERT_TRUE(store::segment::remove(name).ok());
    // Noticed within about a second; until then the old mapping still answers.
    int rc = 0;
    for (int i = 0; i < 300 && rc != -ENOENT; i++) {
        rc = filter("/api/");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(rc, -ENOENT);
    EXPECT_EQ(bpftime_server__attached(server), 0);

    auto s = store::segment::open(name);
    ASSERT_TRUE(s.ok());
    seg = *s;
    provider = std::make_unique<event_provider_impl>(seg);
    attach(program("mov %r0, 418\nexit\n"));
    for (int i = 0; i < 300 && rc != 418; i++) {
        rc = filter("/api/");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(rc, 418);
}

TEST(ServerApi, BadArgumentsAreErrors) {
    EXPECT_EQ(bpftime_server__create("x", nullptr, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(bpftime_server__filter_request(nullptr, nullptr), -EINVAL);
    EXPECT_EQ(bpftime_server__instantiate(nullptr), -EINVAL);
    EXPECT_STREQ(bpftime_server__last_error(nullptr), "");
    bpftime_server__destroy(nullptr);
    // A server for a segment that does not exist answers with an error, not a crash.
    bpftime_server *s = nullptr;
    ASSERT_EQ(bpftime_server__create("bpftime-server-test-missing", nullptr, nullptr, &s), 0);
    request req("/");
    EXPECT_EQ(bpftime_server__filter_request(s, &req.r), -ENOENT);
    EXPECT_NE(std::string(bpftime_server__last_error(s)).find("does not exist"), std::string::npos);
    bpftime_server__destroy(s);
}

// A segment this process may not open (root's, 0600, for a worker running as nobody): every
// request fails with EACCES, the message says so with the segment's owner, group and mode, the
// process's user and the fix, it is logged once however often the server looks again, and it
// never says the segment does not exist.
TEST_F(ServerTest, ASegmentTheProcessMayNotOpenIsAPermissionProblem) {
    if (geteuid() != 0) {
        GTEST_SKIP() << "needs root, to become another user";
    }
    attach_example("url_allowlist");
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // The child reports through the pipe: "rc|last error|log lines".
        close(pipefd[0]);
        std::string out;
        if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
            setresuid(65534, 65534, 65534) != 0) {
            out = "cannot become nobody";
        } else {
            std::vector<std::string> lines;
            bpftime_server *s = nullptr;
            auto collect = [](void *user, int, const char *msg) {
                static_cast<std::vector<std::string> *>(user)->emplace_back(msg);
            };
            int rc = bpftime_server__create(name.c_str(), collect, &lines, &s);
            request req("/api/x");
            for (int i = 0; i < 3 && rc == 0; i++) {
                rc = bpftime_server__filter_request(s, &req.r);
                (void)bpftime_server__instantiate(s); // looks at the segment again
            }
            out = std::to_string(rc) + "|" + bpftime_server__last_error(s) + "|";
            for (const std::string &l : lines) {
                out += l + "\n";
            }
            bpftime_server__destroy(s);
        }
        (void)!write(pipefd[1], out.data(), out.size());
        _exit(0);
    }
    close(pipefd[1]);
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) {
        out.append(buf, static_cast<size_t>(n));
    }
    close(pipefd[0]);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_EQ(out.rfind(std::to_string(-EACCES) + "|", 0), 0u) << out;
    size_t bar = out.find('|', 1);
    std::string message = out.substr(bar + 1, out.find('|', bar + 1) - bar - 1);
    std::string log = out.substr(out.find('|', bar + 1) + 1);
    for (const char *want :
         {"permission denied", "user nobody (uid 65534)", "owner root, uid 0", "mode 0600",
          "--shm-group nogroup", "segment chgrp nogroup", "requests get the fail policy"}) {
        EXPECT_NE(message.find(want), std::string::npos) << want << " in: " << message;
    }
    EXPECT_EQ(message.find("does not exist"), std::string::npos) << message;
    size_t lines = 0;
    for (size_t at = 0; (at = log.find("permission denied", at)) != std::string::npos; at++) {
        lines++;
    }
    EXPECT_EQ(lines, 1u) << log;
}

} // namespace
} // namespace bpftime
