// SPDX-License-Identifier: MIT
// The segment as untrusted input: who owns it and who may write it, damaged records, a full
// /dev/shm, truncation under a running process, and a lock holder that is stopped or gone.
#include <bpftime/attach/attach.hpp>
#include <bpftime/minimal_syscall_server.h>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>

#include "../../store/layout.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bpftime {
namespace {

using store::segment;
namespace detail = store::detail;

constexpr uid_t nobody = 65534;

struct SegmentSecurity : ::testing::Test {
    std::string name;
    void SetUp() override {
        name = "bpftime-sec-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
    }
    void TearDown() override { (void)segment::remove(name); }

    // The segment's bytes, mapped as another process (or a hostile user) would.
    struct raw {
        int fd = -1;
        uint8_t *base = nullptr;
        size_t size = 0;
        ~raw() {
            if (base != nullptr) {
                munmap(base, size);
            }
            if (fd >= 0) {
                close(fd);
            }
        }
        detail::header &hdr() const { return *reinterpret_cast<detail::header *>(base); }
        detail::slot &slot_of(uint32_t id) const {
            auto *slots = reinterpret_cast<detail::slot *>(base + hdr().table_offset);
            for (uint32_t i = 0; i < hdr().max_objects; i++) {
                if (slots[i].state == detail::slot_live && slots[i].id == id) {
                    return slots[i];
                }
            }
            ADD_FAILURE() << "no slot with id " << id;
            return slots[0];
        }
    };
    std::unique_ptr<raw> map_raw() const {
        auto r = std::make_unique<raw>();
        r->fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
        EXPECT_GE(r->fd, 0);
        struct stat st {};
        fstat(r->fd, &st);
        r->size = static_cast<size_t>(st.st_size);
        void *p = mmap(nullptr, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
        EXPECT_NE(p, MAP_FAILED);
        r->base = static_cast<uint8_t *>(p);
        return r;
    }
};

std::vector<vm::ebpf_inst> ret0() {
    return {{0xb7, 0, 0, 0, 0}, {0x95, 0, 0, 0, 0}};
}

TEST_F(SegmentSecurity, ASegmentOfAnotherUserIsRefused) {
    if (geteuid() != 0) {
        GTEST_SKIP() << "needs root to give a segment to another user";
    }
    // Another user got there first: the name exists, owned by nobody, mode 0600.
    int fd = shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchown(fd, nobody, nobody), 0);
    close(fd);
    for (bool create : {true, false}) {
        auto seg = segment::open(name, {.create = create});
        ASSERT_FALSE(seg.ok()) << "a segment another user created is used (create " << create
                               << ")";
        EXPECT_EQ(seg.err().code, EPERM);
        const std::string &m = seg.err().message;
        EXPECT_NE(m.find("segment " + name), std::string::npos) << m;
        EXPECT_NE(m.find("uid 65534"), std::string::npos) << m;
        EXPECT_NE(m.find("mode 0600"), std::string::npos) << m;
        EXPECT_NE(m.find("rm /dev/shm/" + name), std::string::npos) << m;
        EXPECT_EQ(m.find("--"), std::string::npos) << m;
    }
    ASSERT_TRUE(segment::remove(name).ok());

    // A real segment given to nobody: refused by default, used when nobody is the owner the
    // host was told to expect.
    ASSERT_TRUE(segment::open(name).ok());
    fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    ASSERT_EQ(fchown(fd, nobody, nobody), 0);
    close(fd);
    EXPECT_FALSE(segment::open(name, {.create = false}).ok());
    auto expected = segment::open(name, {.create = false, .owner = nobody});
    EXPECT_TRUE(expected.ok()) << expected.err().message;
    // A configured owner is the only one: root's own segment is not that user's.
    fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    ASSERT_EQ(fchown(fd, 0, 0), 0);
    close(fd);
    EXPECT_FALSE(segment::open(name, {.create = false, .owner = nobody}).ok());
}

TEST_F(SegmentSecurity, ASegmentOthersCanWriteIsRefused) {
    ASSERT_TRUE(segment::open(name).ok());
    int fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchmod(fd, 0666), 0);
    auto seg = segment::open(name, {.create = false});
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.err().message.find("other users can write it"), std::string::npos)
        << seg.err().message;
    EXPECT_NE(seg.err().message.find("mode 0666"), std::string::npos) << seg.err().message;

    // Group-writable: only with that group configured.
    ASSERT_EQ(fchmod(fd, 0660), 0);
    struct stat st {};
    ASSERT_EQ(fstat(fd, &st), 0);
    close(fd);
    seg = segment::open(name, {.create = false});
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.err().message.find("no group was configured"), std::string::npos)
        << seg.err().message;
    EXPECT_FALSE(segment::open(name, {.create = false, .group = st.st_gid + 1}).ok());
    seg = segment::open(name, {.create = false, .group = st.st_gid});
    EXPECT_TRUE(seg.ok()) << seg.err().message;
}

// Hosts (member_groups) accept a segment their group can write when they belong to that group;
// a group they are not in stays refused, and the configured group, when there is one, wins.
TEST_F(SegmentSecurity, HostsAcceptASegmentOfTheirOwnGroup) {
    if (geteuid() != 0) {
        GTEST_SKIP() << "needs root, to give a segment to a group this process is not in";
    }
    gid_t mine = getegid();
    gid_t other = mine + 4242; // no group of this process
    ASSERT_TRUE(segment::open(name, {.mode = 0660, .group = mine}).ok());
    auto access = store::access_of_segment(name);
    ASSERT_TRUE(access.ok()) << access.err().message;
    EXPECT_EQ(access->group, mine);
    EXPECT_EQ(access->mode, 0660u);
    auto seg = segment::open(name, {.create = false, .member_groups = true});
    EXPECT_TRUE(seg.ok()) << seg.err().message;
    seg = segment::open(name, {.create = false, .group = other, .member_groups = true});
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.err().message.find("the configured group is"), std::string::npos)
        << seg.err().message;

    ASSERT_TRUE(store::set_segment_access(name, other, 0660).ok());
    seg = segment::open(name, {.create = false, .member_groups = true});
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.err().message.find("nor is this process a member of it"), std::string::npos)
        << seg.err().message;
    EXPECT_NE(seg.err().message.find("gid " + std::to_string(other)), std::string::npos)
        << seg.err().message;
    // Not group-writable: any host of the owner's may use it, as before.
    ASSERT_TRUE(store::set_segment_access(name, std::nullopt, 0640).ok());
    seg = segment::open(name, {.create = false, .member_groups = true});
    EXPECT_TRUE(seg.ok()) << seg.err().message;
}

TEST_F(SegmentSecurity, SegmentAccessRefusesBadModesAndMissingSegments) {
    EXPECT_EQ(store::set_segment_access(name, std::nullopt, 0660).err().code, ENOENT);
    EXPECT_EQ(store::access_of_segment(name).err().code, ENOENT);
    ASSERT_TRUE(segment::open(name).ok());
    for (unsigned bad : {0666u, 0606u, 0700u, 0400u, 04660u, 0460u}) {
        auto r = store::set_segment_access(name, std::nullopt, bad);
        ASSERT_FALSE(r.ok()) << std::oct << bad;
        EXPECT_EQ(r.err().code, EINVAL);
        EXPECT_NE(r.err().message.find("is not one a segment may have"), std::string::npos)
            << r.err().message;
    }
    EXPECT_EQ(store::access_of_segment(name)->mode, 0600u);
}

TEST_F(SegmentSecurity, NoSpaceIsAnErrorAtCreationAndLeavesNothing) {
    // Far more than /dev/shm holds: posix_fallocate refuses, and the name is removed again.
    auto seg = segment::open(name, {.size = uint64_t{1} << 44});
    ASSERT_FALSE(seg.ok());
    EXPECT_NE(seg.err().message.find("cannot reserve"), std::string::npos) << seg.err().message;
    int fd = shm_open(("/" + name).c_str(), O_RDONLY, 0);
    EXPECT_LT(fd, 0) << "a half-made segment was left behind";
    if (fd >= 0) {
        close(fd);
    }
}

// A segment with one of each object; returns {program, map, target, link} ids.
std::array<uint32_t, 4> populate(segment &seg) {
    auto map = seg.create_map("m", {maps::map_type::hash, 4, 8, 16, 0});
    EXPECT_TRUE(map.ok());
    auto prog = seg.create_program("p", 0, "s", ret0(), {*map});
    EXPECT_TRUE(prog.ok());
    auto target = seg.create_target("t", 1, "args");
    EXPECT_TRUE(target.ok());
    auto link = seg.create_link("l", *prog, *target, true);
    EXPECT_TRUE(link.ok());
    return {*prog, *map, *target, *link};
}

TEST_F(SegmentSecurity, DamagedRecordsAreRefusedAndTheOthersStayUsable) {
    auto seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16});
    auto [prog, map, target, link] = populate(*seg);
    auto prog2 = *seg->create_program("q", 0, "s", ret0(), {});
    auto r = map_raw();

    struct damage {
        const char *what;
        uint32_t id;
        std::function<void()> apply, undo;
        const char *why;
    };
    auto &ps = r->slot_of(prog);
    auto &ms = r->slot_of(map);
    auto &ts = r->slot_of(target);
    auto saved_extent = ps.extent;
    auto *payload = reinterpret_cast<detail::program_payload *>(r->base + ps.extent +
                                                                sizeof(detail::extent_header));
    auto saved_payload = *payload;
    auto *map_ext = reinterpret_cast<detail::extent_header *>(r->base + ms.extent);
    auto saved_map_ext = *map_ext;
    auto saved_key = ms.key_size;
    auto *args = reinterpret_cast<char *>(r->base + ts.extent + sizeof(detail::extent_header));
    auto args_size = reinterpret_cast<detail::extent_header *>(r->base + ts.extent)->size -
                     sizeof(detail::extent_header);
    std::vector<char> saved_args(args, args + args_size);
    const damage cases[] = {
        {"extent offset past the mapping", prog, [&] { ps.extent = uint64_t{1} << 40; },
         [&] { ps.extent = saved_extent; }, "outside the heap"},
        {"extent offset into the table", prog, [&] { ps.extent = r->hdr().table_offset; },
         [&] { ps.extent = saved_extent; }, "outside the heap"},
        {"instruction count", prog, [&] { payload->insn_count = 0x7fffffff; },
         [&] { *payload = saved_payload; }, "do not fit its extent"},
        {"map count", prog, [&] { payload->map_count = 1000; }, [&] { *payload = saved_payload; },
         "do not fit its extent"},
        {"extent size", map, [&] { map_ext->size = uint64_t{1} << 50; },
         [&] { *map_ext = saved_map_ext; }, "past the heap's end"},
        {"map key size", map, [&] { ms.key_size = 600; }, [&] { ms.key_size = saved_key; },
         "map spec is invalid"},
        {"map key size against its storage", map, [&] { ms.key_size = 8; },
         [&] { ms.key_size = saved_key; }, "its storage"},
        {"name without NUL", prog, [&] { std::memset(ps.name, 'x', sizeof ps.name); },
         [&] { std::memset(ps.name, 0, sizeof ps.name), ps.name[0] = 'p'; }, "name is not NUL"},
        {"target arguments without NUL", target, [&] { std::memset(args, 'y', args_size); },
         [&] { std::memcpy(args, saved_args.data(), args_size); }, "argument string"},
        {"kind", prog, [&] { ps.kind = 9; }, [&] { ps.kind = 1; }, "kind 9 is unknown"},
    };
    for (const damage &d : cases) {
        SCOPED_TRACE(d.what);
        d.apply();
        auto snap = seg->read_all();
        ASSERT_TRUE(snap.ok()) << snap.err().message;
        ASSERT_EQ(snap->damaged.size(), 1u);
        EXPECT_EQ(snap->damaged[0].id, d.id);
        EXPECT_NE(snap->damaged[0].why.find(d.why), std::string::npos) << snap->damaged[0].why;
        // The others are there.
        EXPECT_TRUE(std::any_of(snap->programs.begin(), snap->programs.end(),
                                [&](auto &p) { return p.id == prog2; }));
        EXPECT_EQ(snap->links.size(), 1u);
        // A single read of the damaged object says which and why.
        if (d.id == prog && std::string(d.why) != "kind 9 is unknown") {
            auto p = seg->program(prog);
            ASSERT_FALSE(p.ok());
            EXPECT_NE(p.err().message.find("object " + std::to_string(prog) + " is damaged"),
                      std::string::npos)
                << p.err().message;
        }
        if (d.id == map) {
            EXPECT_FALSE(seg->map_view(map).ok());
            EXPECT_FALSE(seg->map(map).ok());
        }
        d.undo();
        snap = seg->read_all();
        ASSERT_TRUE(snap.ok());
        EXPECT_TRUE(snap->damaged.empty()) << snap->damaged[0].why;
    }

    // Two slots with one id: both refused.
    uint32_t saved_id = r->slot_of(prog2).id;
    r->slot_of(prog2).id = prog;
    auto snap = seg->read_all();
    ASSERT_TRUE(snap.ok());
    EXPECT_EQ(snap->damaged.size(), 2u);
    // (slot_of finds the first slot holding prog: the program, created first)
    auto *slots = reinterpret_cast<detail::slot *>(r->base + r->hdr().table_offset);
    for (uint32_t i = 0; i < r->hdr().max_objects; i++) {
        if (slots[i].kind == 1 && std::string(slots[i].name) == "q") {
            slots[i].id = saved_id;
        }
    }

    // A header whose heap lies past the mapping: the segment is refused when opened.
    r->hdr().heap_size = r->size;
    auto again = segment::open(name, {.create = false});
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.err().message.find("is corrupt"), std::string::npos) << again.err().message;
    // A header changed under a process that opened the segment changes nothing there.
    snap = seg->read_all();
    ASSERT_TRUE(snap.ok());
    EXPECT_TRUE(snap->damaged.empty());
}

// A damaged target record may have been the URL filter's: the nginx server cannot tell, so the
// link counts as failed there and requests get the fail policy (never the programs' silence).
TEST_F(SegmentSecurity, ALinkWhoseTargetIsDamagedGetsTheFailPolicy) {
    auto seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16});
    const std::vector<vm::ebpf_inst> refuse = {{0xb7, 0, 0, 0, 403}, {0x95, 0, 0, 0, 0}};
    auto prog = seg->create_program("refuse", 0, "nginx", refuse, {});
    auto target = seg->create_target("t", attach_type_nginx_url, "");
    ASSERT_TRUE(prog.ok() && target.ok());
    ASSERT_TRUE(seg->create_link("l", *prog, *target, true).ok());
    bpftime_server *server = nullptr;
    ASSERT_EQ(bpftime_server__create(name.c_str(), nullptr, nullptr, &server), 0);
    const std::string path = "/x";
    bpftime_nginx_request req{};
    req.path = req.uri = req.method = req.host = req.client = path.c_str();
    req.path_len = req.uri_len = req.method_len = req.host_len = req.client_len = 2;
    EXPECT_EQ(bpftime_server__filter_request(server, &req), 403);

    auto r = map_raw();
    r->slot_of(*target).extent = uint64_t{1} << 40; // its arguments now lie outside the heap
    // A write the hosts see (another object) moves the generation.
    ASSERT_TRUE(seg->create_program("other", 0, "s", ret0(), {}).ok());
    const int rc = bpftime_server__filter_request(server, &req);
    EXPECT_LT(rc, 0) << "a request was decided while a link's target is damaged";
    EXPECT_NE(std::string(bpftime_server__last_error(server)).find("is damaged"), std::string::npos)
        << bpftime_server__last_error(server);
    bpftime_server__destroy(server);
}

TEST_F(SegmentSecurity, ASegmentTruncatedUnderTheProcessDoesNotKillIt) {
    auto seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16});
    auto ids = populate(*seg);
    auto view = seg->map_view(ids[1]);
    ASSERT_TRUE(view.ok());
    uint32_t key = 1;
    uint64_t value = 7;
    ASSERT_EQ(view->update(&key, &value, 0), 0);
    uint64_t before = seg->generation();
    EXPECT_FALSE(seg->damaged());

    int fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
    ASSERT_EQ(ftruncate(fd, 0), 0);
    close(fd);

    // The hot path's load: SIGBUS, answered with zero pages.
    EXPECT_EQ(seg->generation(), 0u);
    EXPECT_NE(before, 0u);
    EXPECT_TRUE(seg->damaged());
    // A program's map lookup on the old view: no crash, nothing found.
    EXPECT_EQ(view->lookup(&key), nullptr);
    auto snap = seg->read_all();
    ASSERT_FALSE(snap.ok());
    EXPECT_NE(snap.err().message.find("truncated"), std::string::npos) << snap.err().message;
    EXPECT_FALSE(seg->program(ids[0]).ok());
    // Opening it again: too small, refused.
    EXPECT_FALSE(segment::open(name, {.create = false, .wait_ms = 0}).ok());
}

TEST_F(SegmentSecurity, SigbusElsewhereStillReachesTheProcessHandler) {
    ASSERT_TRUE(segment::open(name).ok()); // installs the store's handler
    pid_t child = fork();
    if (child == 0) {
        // The store's handler is installed in the parent already; a SIGBUS outside any segment
        // keeps its default action.
        raise(SIGBUS);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    // Killed by it (or, under a sanitizer, reported by the sanitizer's own handler): either
    // way the store's handler did not swallow it.
    EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

// A child that takes the lock and stops.
pid_t stopped_holder(const std::string &name) {
    pid_t child = fork();
    if (child == 0) {
        auto s = segment::open(name, {.create = false});
        if (s) {
            (*s)->lock_for_test();
        }
        raise(SIGSTOP);
        pause();
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, WUNTRACED);
    return child;
}

TEST_F(SegmentSecurity, AStoppedLockHolderBlocksNobodyForLong) {
    auto seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16});
    pid_t child = stopped_holder(name);

    // A controller waits its bound, then names the holder and its state.
    auto controller = *segment::open(name, {.create = false, .wait_ms = 300});
    auto t0 = std::chrono::steady_clock::now();
    auto made = controller->create_target("t", 1, "x");
    auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.err().code, ETIMEDOUT);
    EXPECT_NE(made.err().message.find("process " + std::to_string(child)), std::string::npos)
        << made.err().message;
    EXPECT_NE(made.err().message.find("stopped"), std::string::npos) << made.err().message;
    EXPECT_GE(waited, std::chrono::milliseconds(250));
    EXPECT_LT(waited, std::chrono::seconds(3));

    // A host does not wait at all.
    auto host = *segment::open(name, {.create = false, .wait_ms = 0});
    t0 = std::chrono::steady_clock::now();
    auto snap = host->read_all();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
    ASSERT_FALSE(snap.ok());
    EXPECT_EQ(snap.err().code, EBUSY);

    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    EXPECT_TRUE(controller->create_target("t", 1, "x").ok());
}

TEST_F(SegmentSecurity, ALockWordNamingAGoneThreadIsRecovered) {
    auto seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16, .wait_ms = 2000});
    // A thread id that existed and no longer does.
    pid_t gone = fork();
    if (gone == 0) {
        _exit(0);
    }
    waitpid(gone, nullptr, 0);
    auto r = map_raw();
    __atomic_store_n(&r->hdr().lock.__data.__lock, static_cast<int>(gone), __ATOMIC_RELEASE);
    auto t0 = std::chrono::steady_clock::now();
    auto made = seg->create_target("t", 1, "x");
    EXPECT_TRUE(made.ok()) << made.err().message;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
}

} // namespace
} // namespace bpftime
