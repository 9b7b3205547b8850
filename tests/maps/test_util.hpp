// SPDX-License-Identifier: MIT
// Helpers shared by the map tests: maps in real POSIX shared memory, child processes with
// bounded waits, CPU pinning.
#pragma once

#include <bpftime/maps/maps.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bpftime::maps::test {

/// A POSIX shared memory object mapped MAP_SHARED. The creator unlinks it when destroyed;
/// open() maps an existing one again (at another address), as a separate process would.
class shm_region {
public:
    static shm_region create(uint64_t size) {
        static std::atomic<int> counter{0};
        std::string name =
            "/bpftime-maps-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
        int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
            throw std::runtime_error("shm_open/ftruncate " + name + ": " + strerror(errno));
        }
        return shm_region(name, fd, size, true);
    }
    static shm_region open(const std::string &name, uint64_t size) {
        int fd = shm_open(name.c_str(), O_RDWR, 0);
        if (fd < 0) {
            throw std::runtime_error("shm_open " + name + ": " + strerror(errno));
        }
        return shm_region(name, fd, size, false);
    }

    shm_region(shm_region &&o) noexcept
        : name_(std::move(o.name_)), data_(std::exchange(o.data_, nullptr)), size_(o.size_),
          owner_(std::exchange(o.owner_, false)) {}
    shm_region &operator=(shm_region &&) = delete;
    ~shm_region() {
        if (data_ != nullptr) {
            munmap(data_, size_);
        }
        if (owner_) {
            shm_unlink(name_.c_str());
        }
    }

    uint8_t *data() const { return static_cast<uint8_t *>(data_); }
    uint64_t size() const { return size_; }
    const std::string &name() const { return name_; }

private:
    shm_region(std::string name, int fd, uint64_t size, bool owner)
        : name_(std::move(name)), size_(size), owner_(owner) {
        data_ = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (data_ == MAP_FAILED) {
            data_ = nullptr;
            throw std::runtime_error("mmap " + name_ + ": " + strerror(errno));
        }
    }

    std::string name_;
    void *data_ = nullptr;
    uint64_t size_ = 0;
    bool owner_ = false;
};

template <class T>
T must(result<T> r) {
    if (!r) {
        throw std::runtime_error(r.err().message);
    }
    return std::move(r).value();
}

inline void must(result<void> r) {
    if (!r) {
        throw std::runtime_error(r.err().message);
    }
}

/// A map formatted in its own shared memory object.
class shm_map {
public:
    explicit shm_map(const map_spec &spec, uint32_t ncpus = 4)
        : spec_(spec), region_(shm_region::create(must(storage_size(spec, ncpus)))) {
        must(init_storage(region_.data(), region_.size(), spec, ncpus));
        view_ = must(map_view::open(region_.data(), region_.size(), spec));
    }

    const map_view &view() const { return view_; }
    const map_view *operator->() const { return &view_; }
    const shm_region &region() const { return region_; }

    /// Maps the storage again and attaches, as another process does.
    std::pair<shm_region, map_view> reopen() const {
        auto region = shm_region::open(region_.name(), region_.size());
        auto view = must(map_view::open(region.data(), region.size(), spec_));
        return {std::move(region), view};
    }

private:
    map_spec spec_;
    shm_region region_;
    map_view view_;
};

/// Forks; the child runs fn and leaves with _exit(fn()) (1 on an exception).
inline pid_t spawn(const std::function<int()> &fn) {
    pid_t pid = fork();
    if (pid == 0) {
        int rc = 1;
        try {
            rc = fn();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "child %d: %s\n", getpid(), e.what());
        }
        _exit(rc);
    }
    return pid;
}

/// Waits for a child at most timeout (then kills it) and returns its wait status.
inline int wait_child(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ADD_FAILURE() << "child " << pid << " did not finish in time";
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return status;
}

/// Waits for a child and expects it to exit with 0.
inline void expect_success(pid_t pid) {
    int status = wait_child(pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << pid << " status " << status << " (exit code " << WEXITSTATUS(status) << ")";
}

/// Holds children back until open(), so they start together.
class start_gate {
public:
    start_gate() {
        if (pipe(fds_) != 0) {
            throw std::runtime_error("pipe failed");
        }
    }
    ~start_gate() { ::close(fds_[0]); }
    void wait() {
        ::close(fds_[1]);
        char c;
        while (::read(fds_[0], &c, 1) < 0 && errno == EINTR) {
        }
    }
    void open() { ::close(fds_[1]); }

private:
    int fds_[2];
};

/// Pins the calling thread to one CPU it may run on; restores the mask when destroyed.
class pin_cpu {
public:
    pin_cpu() {
        sched_getaffinity(0, sizeof old_, &old_);
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (CPU_ISSET(c, &old_)) {
                cpu_ = c;
                break;
            }
        }
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu_, &one);
        sched_setaffinity(0, sizeof one, &one);
    }
    ~pin_cpu() { sched_setaffinity(0, sizeof old_, &old_); }
    pin_cpu(const pin_cpu &) = delete;
    pin_cpu &operator=(const pin_cpu &) = delete;

    /// The slot the map uses for this thread.
    uint32_t slot(uint32_t ncpus) const { return static_cast<uint32_t>(cpu_) % ncpus; }

private:
    cpu_set_t old_;
    int cpu_ = 0;
};

template <class T>
std::span<const uint8_t> bytes(const T &v) {
    return {reinterpret_cast<const uint8_t *>(&v), sizeof v};
}

template <class T>
T from_bytes(std::span<const uint8_t> b, size_t offset = 0) {
    T v{};
    std::memcpy(&v, b.data() + offset, sizeof v);
    return v;
}

} // namespace bpftime::maps::test
