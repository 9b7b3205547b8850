// SPDX-License-Identifier: MIT
// segment::check (what `bpftime check` prints): a consistent segment passes with its totals
// right, and each kind of damage, made by hand in the segment's bytes as another process could,
// is reported under its name with the object it concerns.
#include <bpftime/store/store.hpp>

#include "../../store/layout.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

namespace bpftime {
namespace {

using store::segment;
namespace detail = store::detail;

std::vector<vm::ebpf_inst> ret0() {
    return {{0xb7, 0, 0, 0, 0}, {0x95, 0, 0, 0, 0}};
}

struct SegmentCheck : ::testing::Test {
    std::string name;
    std::shared_ptr<segment> seg;
    uint32_t map = 0, prog = 0, target = 0, link = 0, prog2 = 0;
    int fd = -1;
    uint8_t *base = nullptr;
    size_t size = 0;

    void SetUp() override {
        name = "bpftime-check-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name();
        (void)segment::remove(name);
        seg = *segment::open(name, {.size = 1 << 20, .max_objects = 16});
        map = *seg->create_map("m", {maps::map_type::hash, 4, 8, 16, 0});
        prog = *seg->create_program("p", 0, "s", ret0(), {map});
        target = *seg->create_target("t", 1, "args");
        link = *seg->create_link("l", prog, target, true);
        prog2 = *seg->create_program("q", 0, "s", ret0(), {});
        // This process as a host of the link: the link gets its host records.
        ASSERT_TRUE(seg->host_counters(link, getpid()).ok());
        fd = shm_open(("/" + name).c_str(), O_RDWR, 0);
        ASSERT_GE(fd, 0);
        struct stat st {};
        fstat(fd, &st);
        size = static_cast<size_t>(st.st_size);
        void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ASSERT_NE(p, MAP_FAILED);
        base = static_cast<uint8_t *>(p);
    }
    void TearDown() override {
        if (base != nullptr) {
            munmap(base, size);
        }
        if (fd >= 0) {
            close(fd);
        }
        seg.reset();
        (void)segment::remove(name);
    }

    detail::header &hdr() const { return *reinterpret_cast<detail::header *>(base); }
    detail::slot &slot_of(uint32_t id) const {
        auto *slots = reinterpret_cast<detail::slot *>(base + hdr().table_offset);
        for (uint32_t i = 0; i < hdr().max_objects; i++) {
            if (slots[i].state != detail::slot_free && slots[i].id == id) {
                return slots[i];
            }
        }
        ADD_FAILURE() << "no slot with id " << id;
        return slots[0];
    }
    detail::extent_header &extent_of(uint32_t id) const {
        return *reinterpret_cast<detail::extent_header *>(base + slot_of(id).extent);
    }

    store::check_report check() const {
        auto r = seg->check();
        EXPECT_TRUE(r.ok()) << r.err().message;
        return r.ok() ? *r : store::check_report{};
    }
};

std::string describe(const store::check_report &r) {
    std::string out;
    for (const auto &f : r.findings) {
        out += f.check + " (" + std::to_string(f.id) + "): " + f.message + "\n";
    }
    return out.empty() ? "no findings" : out;
}

bool has(const store::check_report &r, const std::string &check, uint32_t id,
         const std::string &text) {
    return std::any_of(r.findings.begin(), r.findings.end(), [&](const store::check_finding &f) {
        return f.check == check && f.id == id && f.message.find(text) != std::string::npos;
    });
}

TEST_F(SegmentCheck, AConsistentSegmentPassesWithItsTotals) {
    auto r = check();
    EXPECT_TRUE(r.findings.empty()) << describe(r);
    EXPECT_EQ(r.objects, 5u);
    EXPECT_EQ(r.programs, 2u);
    EXPECT_EQ(r.maps, 1u);
    EXPECT_EQ(r.targets, 1u);
    EXPECT_EQ(r.links, 1u);
    EXPECT_EQ(r.max_objects, 16u);
    // map, two programs, the target's arguments, the link's host records
    EXPECT_EQ(r.extents, 5u);
    EXPECT_GT(r.heap_used, 0u);
    EXPECT_EQ(r.heap_used + r.heap_free, r.heap_size);
    EXPECT_EQ(r.heap_size, hdr().heap_size);
    EXPECT_EQ(r.live_hosts, 1u);
    EXPECT_TRUE(r.dead_hosts.empty());
    EXPECT_EQ(r.generation, seg->generation());
}

TEST_F(SegmentCheck, ARecordThatFailsItsChecksIsReported) {
    auto *payload = reinterpret_cast<detail::program_payload *>(base + slot_of(prog).extent +
                                                                sizeof(detail::extent_header));
    payload->insn_count = 0x7fffffff;
    auto r = check();
    EXPECT_TRUE(has(r, "record", prog, "do not fit its extent")) << describe(r);
}

TEST_F(SegmentCheck, ALinkNamingAMissingProgramIsReported) {
    slot_of(link).prog_id = 999;
    auto r = check();
    EXPECT_TRUE(has(r, "link", link, "names program 999, which does not exist")) << describe(r);
}

TEST_F(SegmentCheck, ALinkNamingAMapAsItsTargetIsReported) {
    slot_of(link).target_id = map;
    auto r = check();
    EXPECT_TRUE(has(r, "link", link, "names target " + std::to_string(map) + ", which is a map"))
        << describe(r);
}

TEST_F(SegmentCheck, AProgramNamingAMissingMapIsReported) {
    auto *payload = reinterpret_cast<detail::program_payload *>(base + slot_of(prog).extent +
                                                                sizeof(detail::extent_header));
    auto *map_ids = reinterpret_cast<uint32_t *>(reinterpret_cast<uint8_t *>(payload + 1) +
                                                 payload->insn_count * sizeof(vm::ebpf_inst));
    map_ids[0] = 4242;
    auto r = check();
    EXPECT_TRUE(has(r, "program", prog, "names map 4242, which does not exist")) << describe(r);
}

TEST_F(SegmentCheck, AnExtentOwnedByAnotherObjectIsReported) {
    extent_of(target).owner = 77;
    auto r = check();
    EXPECT_TRUE(has(r, "extent", target, "belongs to object 77")) << describe(r);
}

TEST_F(SegmentCheck, TwoObjectsSharingStorageAreReported) {
    // Both programs' slots at the first program's extent: each record alone is well formed.
    slot_of(prog2).extent = slot_of(prog).extent;
    auto r = check();
    EXPECT_TRUE(has(r, "overlap", prog, "overlaps object " + std::to_string(prog2)) ||
                has(r, "overlap", prog2, "overlaps object " + std::to_string(prog)))
        << describe(r);
    EXPECT_TRUE(has(r, "extent", prog2, "belongs to object " + std::to_string(prog)))
        << describe(r);
}

TEST_F(SegmentCheck, AnIdPastTheNextIdIsReported) {
    const uint32_t next = hdr().next_id;
    slot_of(prog2).id = next + 5;
    auto r = check();
    EXPECT_TRUE(has(r, "ids", next + 5, "not below the next id " + std::to_string(next)))
        << describe(r);
}

TEST_F(SegmentCheck, ASlotLeftBeingCreatedWithTheLockFreeIsReported) {
    auto &s = slot_of(prog2);
    s.state = detail::slot_creating;
    auto r = check();
    EXPECT_TRUE(has(r, "table", prog2, "still being created")) << describe(r);
}

TEST_F(SegmentCheck, AHostRecordOfANegativePidIsReported) {
    // The record this process took names its pid; nothing else in the link's records does.
    auto *records = base + slot_of(link).extent + sizeof(detail::extent_header);
    const int32_t me = getpid();
    bool changed = false;
    for (size_t off = 0; off + 4 <= 2048 && !changed; off += 4) {
        int32_t v;
        std::memcpy(&v, records + off, 4);
        if (v == me) {
            const int32_t bad = -7;
            std::memcpy(records + off, &bad, 4);
            changed = true;
        }
    }
    ASSERT_TRUE(changed);
    auto r = check();
    EXPECT_TRUE(has(r, "host", link, "host record of pid -7")) << describe(r);
}

TEST_F(SegmentCheck, HostRecordsOfExitedProcessesAreListedNotFindings) {
    pid_t child = fork();
    if (child == 0) {
        auto again = segment::open(name, {.create = false});
        _exit(again.ok() && (*again)->host_counters(link, getpid()).ok() ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    auto r = check();
    EXPECT_TRUE(r.findings.empty()) << describe(r);
    ASSERT_EQ(r.dead_hosts.size(), 1u);
    EXPECT_EQ(r.dead_hosts[0].link_id, link);
    EXPECT_EQ(r.dead_hosts[0].pid, child);
    EXPECT_EQ(r.live_hosts, 1u);
}

TEST_F(SegmentCheck, AnUnknownKindIsReported) {
    slot_of(prog2).kind = 9;
    auto r = check();
    EXPECT_TRUE(has(r, "record", prog2, "kind 9 is unknown")) << describe(r);
}

} // namespace
} // namespace bpftime
