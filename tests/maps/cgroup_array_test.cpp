// SPDX-License-Identifier: MIT
// cgroup_array: slots set from cgroup directory fds hold cgroup ids any process can compare;
// current_task_under_cgroup answers for the calling process; programs get no values.
#include "test_util.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace bpftime::maps::test {
namespace {

constexpr map_spec spec{map_type::cgroup_array, 4, 4, 4, 0};

// The cgroup2 mount point, or empty.
std::string cgroup2_mount() {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.find(" - cgroup2 ") != std::string::npos) {
            std::istringstream f(line);
            std::string id, parent, dev, root, point;
            f >> id >> parent >> dev >> root >> point;
            return point;
        }
    }
    return {};
}

uint64_t inode_of(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
    return st.st_ino;
}

// A fd of a directory, closed at the end of the scope.
struct dir_fd {
    explicit dir_fd(const std::string &path) : fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY)) {}
    ~dir_fd() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
    int fd;
};

result<void> set(const shm_map &m, uint32_t index, int fd, uint64_t flags = update_any) {
    return m->write(bytes(index), bytes(fd), flags);
}

// A fresh cgroup with a child under the cgroup2 mount; tests that need it skip without it.
class CgroupArray : public ::testing::Test {
protected:
    void SetUp() override {
        mount_ = cgroup2_mount();
        if (mount_.empty()) {
            GTEST_SKIP() << "no cgroup2 file system is mounted";
        }
        dir_ = mount_ + "/bpftime-maps-test-" + std::to_string(getpid());
        if (mkdir(dir_.c_str(), 0755) != 0 || mkdir((dir_ + "/child").c_str(), 0755) != 0) {
            rmdir(dir_.c_str());
            GTEST_SKIP() << "cannot create a cgroup under " << mount_ << ": " << strerror(errno);
        }
    }
    void TearDown() override {
        if (!dir_.empty()) {
            rmdir((dir_ + "/child").c_str());
            rmdir(dir_.c_str());
        }
    }

    std::string mount_, dir_;
};

TEST(CgroupArraySpec, KeysAndValuesAreFourBytes) {
    EXPECT_TRUE(validate_spec(spec));
    auto r = validate_spec({map_type::cgroup_array, 4, 8, 4, 0});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("4-byte values"), std::string::npos) << r.err().message;
    r = validate_spec({map_type::cgroup_array, 8, 4, 4, 0});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("4-byte keys"), std::string::npos) << r.err().message;
    r = validate_spec({map_type::cgroup_array, 4, 4, 4, 1});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("no flags"), std::string::npos) << r.err().message;
    EXPECT_STREQ(map_type_name(map_type::cgroup_array), "cgroup_array");
    EXPECT_EQ(parse_map_type("cgroup_array"), map_type::cgroup_array);
}

TEST(CgroupArraySpec, ProgramsGetNoValuesAndCannotUpdate) {
    shm_map m(spec);
    EXPECT_TRUE(m->value_area().empty());
    EXPECT_FALSE(m->lookup_plan().has_value());
    uint32_t key = 0, value = 0;
    EXPECT_EQ(m->lookup(&key), nullptr);
    EXPECT_EQ(m->update(&key, &value, update_any), -EINVAL);
    EXPECT_EQ(m->remove(&key), -EINVAL);
    EXPECT_EQ(m->count(), 4u);
}

TEST(CgroupArraySpec, OtherTypesHaveNoCgroupSlots) {
    shm_map a({map_type::array, 4, 4, 4, 0});
    EXPECT_EQ(a->current_task_under_cgroup(0), -EINVAL);
    EXPECT_FALSE(a->cgroup_at(0).has_value());
}

TEST_F(CgroupArray, AnUpdateStoresTheCgroupsId) {
    shm_map m(spec);
    dir_fd d(dir_);
    ASSERT_GE(d.fd, 0);
    ASSERT_TRUE(set(m, 2, d.fd));
    EXPECT_EQ(m->cgroup_at(2), inode_of(dir_));
    EXPECT_EQ(m->cgroup_at(0), 0u) << "other slots stay empty";
    EXPECT_EQ(must(cgroup_id_of_fd(d.fd)), inode_of(dir_));
    // Another process mapping the storage sees the same id.
    auto [region, view] = m.reopen();
    EXPECT_EQ(view.cgroup_at(2), inode_of(dir_));
    // Values cannot be read back, as in Linux.
    auto r = m->read(bytes(uint32_t{2}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EOPNOTSUPP);
    // Iteration visits every index, as for arrays.
    std::vector<uint32_t> keys;
    std::vector<uint8_t> key;
    while (auto next = must(m->next_key(key))) {
        key = *next;
        keys.push_back(from_bytes<uint32_t>(key));
    }
    EXPECT_EQ(keys, (std::vector<uint32_t>{0, 1, 2, 3}));
}

TEST_F(CgroupArray, DeleteEmptiesASlot) {
    shm_map m(spec);
    dir_fd d(dir_);
    ASSERT_TRUE(set(m, 1, d.fd));
    EXPECT_TRUE(m->erase(bytes(uint32_t{1})));
    EXPECT_EQ(m->cgroup_at(1), 0u);
    auto r = m->erase(bytes(uint32_t{1}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    r = m->erase(bytes(uint32_t{4}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, E2BIG);
}

TEST_F(CgroupArray, AnFdThatIsNotACgroupIsRefused) {
    shm_map m(spec);
    dir_fd tmp("/tmp");
    auto r = set(m, 0, tmp.fd);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EBADF);
    EXPECT_NE(r.err().message.find("is not a cgroup v2 directory"), std::string::npos)
        << r.err().message;
    // A file of the cgroup file system is not a cgroup either.
    int file = ::open((dir_ + "/cgroup.procs").c_str(), O_RDONLY);
    ASSERT_GE(file, 0);
    r = set(m, 0, file);
    ::close(file);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EBADF);
    // A closed fd.
    r = set(m, 0, 1 << 20);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EBADF);
    EXPECT_NE(r.err().message.find("is not open"), std::string::npos) << r.err().message;
    EXPECT_EQ(m->cgroup_at(0), 0u) << "a refused update leaves the slot as it was";
}

TEST_F(CgroupArray, BadIndexFlagsAndValueSizesAreRefused) {
    shm_map m(spec);
    dir_fd d(dir_);
    auto r = set(m, 4, d.fd);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, E2BIG);
    EXPECT_NE(r.err().message.find("max_entries 4"), std::string::npos) << r.err().message;
    for (uint64_t flags : {update_noexist, update_exist}) {
        r = set(m, 0, d.fd, flags);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.err().code, EINVAL);
        EXPECT_NE(r.err().message.find("only BPF_ANY"), std::string::npos) << r.err().message;
    }
    uint64_t wide = static_cast<uint64_t>(d.fd);
    r = m->write(bytes(uint32_t{0}), bytes(wide));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_EQ(m->cgroup_at(0), 0u);
}

TEST_F(CgroupArray, UnderCgroupAnswersForTheCallingProcess) {
    shm_map m(spec);
    EXPECT_EQ(m->current_task_under_cgroup(0), -EAGAIN) << "empty slot";
    EXPECT_EQ(m->current_task_under_cgroup(4), -E2BIG) << "index past max_entries";
    dir_fd root(mount_), test(dir_), child(dir_ + "/child");
    ASSERT_TRUE(set(m, 0, root.fd));
    ASSERT_TRUE(set(m, 1, test.fd));
    ASSERT_TRUE(set(m, 2, child.fd));
    // This process is somewhere under the root, not in the new cgroups.
    EXPECT_EQ(m->current_task_under_cgroup(0), 1);
    EXPECT_EQ(m->current_task_under_cgroup(1), 0);
    EXPECT_EQ(m->current_task_under_cgroup(2), 0);
    // A forked process moved into the child cgroup is under it, its parent and the root; it
    // answers from its own cgroup even though its parent asked before the fork.
    std::string procs = dir_ + "/child/cgroup.procs";
    pid_t pid = spawn([&] {
        std::ofstream(procs) << getpid() << std::endl;
        auto [region, view] = m.reopen();
        bool ok = view.current_task_under_cgroup(0) == 1 &&
                  view.current_task_under_cgroup(1) == 1 && view.current_task_under_cgroup(2) == 1;
        auto ids = must(current_cgroup_ancestry());
        ok = ok && ids.size() >= 3 && ids.front() == inode_of(dir_ + "/child") &&
             ids[1] == inode_of(dir_) && ids.back() == inode_of(mount_);
        return ok ? 0 : 1;
    });
    expect_success(pid);
    // A process in the test cgroup is not under its child.
    procs = dir_ + "/cgroup.procs";
    pid = spawn([&] {
        std::ofstream(procs) << getpid() << std::endl;
        return m->current_task_under_cgroup(1) == 1 && m->current_task_under_cgroup(2) == 0 ? 0 : 1;
    });
    expect_success(pid);
    EXPECT_EQ(m->current_task_under_cgroup(1), 0) << "the parent did not move";
}

} // namespace
} // namespace bpftime::maps::test
