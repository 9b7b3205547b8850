// SPDX-License-Identifier: MIT
// Kernel objects through libbpf, for kernel_event_provider: descriptors, program loading with
// the verifier's log, perf events for uprobes and tracepoints, and map access.
#pragma once

#include <bpftime/provider/event_provider.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace bpftime::kernel {

/// An owned file descriptor.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) : fd_(fd < 0 ? -1 : fd) {}
    unique_fd(unique_fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd &operator=(unique_fd &&o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    unique_fd(const unique_fd &) = delete;
    unique_fd &operator=(const unique_fd &) = delete;
    ~unique_fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

/// Whether the kernel takes an eBPF program from this process; the reason when not.
result<void> probe_bpf();

/// Loads a program; a refusal carries the end of the verifier's log.
result<unique_fd> load_program(uint32_t prog_type, const std::string &name,
                               const std::vector<vm::ebpf_inst> &insns);

/// Refuses (EOPNOTSUPP, naming `what` and the fix) a program that calls bpf_override_return
/// outside a kprobe section: the kernel allows it only in kprobes on functions marked
/// ALLOW_ERROR_INJECTION, never at the user-space targets this provider attaches.
result<void> check_override_return(const std::string &what, const std::string &section,
                                   std::span<const vm::ebpf_inst> insns);

/// A perf event for a target of attach_type (uprobe, uretprobe, tracepoint, kprobe, kretprobe),
/// ready for bpf_link_create(BPF_PERF_EVENT).
result<unique_fd> open_perf_event(int32_t attach_type, const std::string &args);

/// The kernel's id of a program, map or link.
uint32_t object_id(int fd);

/// A loaded program as the kernel runs it.
struct program_dump {
    uint32_t id = 0;
    std::vector<vm::ebpf_inst> insns; ///< after the verifier's rewriting
    /// What the kernel counted (only while kernel.bpf_stats_enabled is 1; 0 otherwise).
    uint64_t run_cnt = 0, run_time_ns = 0;
};
program_dump program_of(int fd);
/// Whether kernel.bpf_stats_enabled is 1: the kernel counts runs and their time per program.
bool stats_enabled();

/// The last max_lines non-empty lines of a verifier (or libbpf) log, each indented by two
/// spaces, after a line saying how many came before them; joined by line breaks.
std::string log_tail(const char *log, size_t max_lines);

/// How map_access reaches the maps an array_of_maps or hash_of_maps holds (or the programs of
/// a prog_array).
struct inner_maps {
    /// The fd of bpftime map id, refused (with the reason) when it may not go into the map.
    std::function<result<unique_fd>(uint32_t id)> fd_of;
    /// The bpftime id of the map the kernel calls kernel_id (0: none).
    std::function<uint32_t(uint32_t kernel_id)> id_of;
};

/// map_access over a kernel map; an outer map's values are bpftime map ids (inner).
std::unique_ptr<map_access> make_map_access(store::map_info info, unique_fd fd,
                                            inner_maps inner = {});

} // namespace bpftime::kernel
