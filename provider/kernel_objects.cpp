// SPDX-License-Identifier: MIT
#include "kernel_objects.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/perf_event.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bpftime::kernel {

void unique_fd::reset(int fd) {
    if (fd_ >= 0) {
        ::close(fd_);
    }
    fd_ = fd < 0 ? -1 : fd;
}

result<void> probe_bpf() {
    const vm::ebpf_inst insns[] = {
        {0xb7, 0, 0, 0, 0}, // mov r0, 0
        {0x95, 0, 0, 0, 0}, // exit
    };
    unique_fd fd(bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "bpftime_probe", "GPL",
                               reinterpret_cast<const bpf_insn *>(insns), 2, nullptr));
    if (!fd) {
        int e = errno;
        return make_error(e, std::string("the kernel refuses eBPF programs from this process "
                                         "(needs root with CAP_BPF): ") +
                                 std::strerror(e));
    }
    return {};
}

// The last lines of a verifier log: where it gave up and why.
std::string log_tail(const char *log, size_t max_lines) {
    std::vector<std::string> lines;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty()) {
            lines.push_back(line);
        }
    }
    std::string out;
    size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
    if (from > 0) {
        out += "  ... (" + std::to_string(from) + " earlier lines)\n";
    }
    for (size_t i = from; i < lines.size(); i++) {
        out += "  " + lines[i] + "\n";
    }
    if (!out.empty()) {
        out.pop_back();
    }
    return out;
}

namespace {

// A number from a sysfs file.
result<uint64_t> read_number(const std::string &path) {
    std::ifstream f(path);
    uint64_t v = 0;
    if (!(f >> v)) {
        return make_error(ENOENT, "cannot read " + path);
    }
    return v;
}

} // namespace

result<unique_fd> load_program(uint32_t prog_type, const std::string &name,
                               const std::vector<vm::ebpf_inst> &insns) {
    auto load = [&](bpf_prog_load_opts *opts) {
        return unique_fd(bpf_prog_load(static_cast<bpf_prog_type>(prog_type), name.c_str(), "GPL",
                                       reinterpret_cast<const bpf_insn *>(insns.data()),
                                       insns.size(), opts));
    };
    // The kernel runs syscall programs only as sleepable ones; libbpf's SEC("syscall") asks
    // for that too.
    const uint32_t flags = prog_type == BPF_PROG_TYPE_SYSCALL ? BPF_F_SLEEPABLE : 0;
    LIBBPF_OPTS(bpf_prog_load_opts, plain, .prog_flags = flags);
    if (unique_fd fd = load(&plain)) {
        return fd;
    }
    // Refused: load again with the verifier's log (only now, so accepted programs neither
    // allocate it nor make the verifier write it).
    int e = errno;
    std::vector<char> log(1u << 20);
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .prog_flags = flags, .log_level = 1,
                .log_size = static_cast<uint32_t>(log.size()), .log_buf = log.data());
    if (unique_fd fd = load(&opts)) {
        return fd; // accepted the second time (a transient refusal)
    }
    log.back() = '\0';
    std::string tail = log_tail(log.data(), 20);
    return make_error(e, "the kernel verifier refused it (" + std::string(std::strerror(e)) + ")" +
                             (tail.empty() ? "" : ":\n" + tail));
}

result<void> check_override_return(const std::string &what, const std::string &section,
                                   std::span<const vm::ebpf_inst> insns) {
    if (section.starts_with("kprobe")) {
        return {}; // the kernel decides, by the function the kprobe is on
    }
    for (const vm::ebpf_inst &inst : insns) {
        if (inst.opcode == vm::op_call && inst.src == vm::call_helper && inst.imm == 58) {
            return make_error(EOPNOTSUPP,
                              what + " calls override_return, which the kernel allows only in "
                                     "kprobes of functions marked ALLOW_ERROR_INJECTION, never in "
                                     "uprobes; making a user-space function return early is "
                                     "user-space only (--provider user)");
        }
    }
    return {};
}

result<unique_fd> open_perf_event(int32_t attach_type, const std::string &args) {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    std::string binary; // the kernel reads the path during the call
    if (attach_type == attach_type_tracepoint) {
        auto id = tracepoint_id(args);
        if (!id) {
            return id.err();
        }
        attr.type = PERF_TYPE_TRACEPOINT;
        attr.config = *id;
    } else if (attach_type == attach_type_uprobe || attach_type == attach_type_uretprobe) {
        auto loc = resolve_uprobe_target(args);
        if (!loc) {
            return loc.err();
        }
        const std::string pmu = "/sys/bus/event_source/devices/uprobe/";
        auto type = read_number(pmu + "type");
        if (!type) {
            return make_error(ENOSYS,
                              "the kernel has no uprobe events (" + type.err().message + ")");
        }
        attr.type = static_cast<uint32_t>(*type);
        if (attach_type == attach_type_uretprobe) {
            // "config:N": the bit that makes the probe a return probe.
            std::ifstream f(pmu + "format/retprobe");
            std::string fmt;
            unsigned bit = 0;
            if (!(f >> fmt) || std::sscanf(fmt.c_str(), "config:%u", &bit) != 1 || bit > 63) {
                return make_error(ENOSYS, "the kernel's uprobe events have no retprobe bit");
            }
            attr.config |= uint64_t{1} << bit;
        }
        binary = loc->binary;
        attr.config1 = reinterpret_cast<uint64_t>(binary.c_str());
        attr.config2 = loc->file_offset;
        // A USDT semaphore: the kernel counts the probe in it while attached (ref_ctr_offset,
        // PERF_UPROBE_REF_CTR_OFFSET_SHIFT).
        attr.config |= loc->semaphore_offset << 32;
    } else if (attach_type == attach_type_kprobe || attach_type == attach_type_kretprobe) {
        // FUNCTION[+OFFSET], through the kprobe PMU as libbpf's bpf_program__attach_kprobe.
        std::string func = args;
        uint64_t offset = 0;
        if (auto plus = args.find('+'); plus != std::string::npos) {
            func = args.substr(0, plus);
            char *end = nullptr;
            errno = 0;
            offset = std::strtoull(args.c_str() + plus + 1, &end, 0);
            if (errno != 0 || end == args.c_str() + plus + 1 || *end != '\0') {
                return make_error(EINVAL, "kprobe target '" + args +
                                              "': the offset is not a number (FUNCTION+OFFSET)");
            }
        }
        if (func.empty()) {
            return make_error(EINVAL, "kprobe target '" + args + "' names no kernel function");
        }
        const std::string pmu = "/sys/bus/event_source/devices/kprobe/";
        auto type = read_number(pmu + "type");
        if (!type) {
            return make_error(ENOSYS,
                              "the kernel has no kprobe events (" + type.err().message + ")");
        }
        attr.type = static_cast<uint32_t>(*type);
        if (attach_type == attach_type_kretprobe) {
            std::ifstream f(pmu + "format/retprobe");
            std::string fmt;
            unsigned bit = 0;
            if (!(f >> fmt) || std::sscanf(fmt.c_str(), "config:%u", &bit) != 1 || bit > 63) {
                return make_error(ENOSYS, "the kernel's kprobe events have no retprobe bit");
            }
            attr.config |= uint64_t{1} << bit;
        }
        binary = func; // the kernel reads the name during the call
        attr.config1 = reinterpret_cast<uint64_t>(binary.c_str());
        attr.config2 = offset;
    } else {
        return make_error(EOPNOTSUPP,
                          "attach type " + attach_type_name(attach_type) + " has no kernel event");
    }
    const bool kernel_probe =
        attach_type == attach_type_kprobe || attach_type == attach_type_kretprobe;
    unique_fd fd(
        static_cast<int>(::syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)));
    if (!fd) {
        int e = errno;
        if (kernel_probe && (e == ENOENT || e == EINVAL)) {
            return make_error(e, "the kernel has no probe point at " + args +
                                     " (a function in /proc/kallsyms that is not inlined or "
                                     "notrace): " +
                                     std::strerror(e));
        }
        return make_error(e, std::string("perf_event_open: ") + std::strerror(e));
    }
    return fd;
}

uint32_t object_id(int fd) {
    // Program, map and link infos all start with the type and the id.
    struct {
        uint32_t type;
        uint32_t id;
    } head{};
    uint32_t len = sizeof head;
    return bpf_obj_get_info_by_fd(fd, &head, &len) == 0 ? head.id : 0;
}

bool stats_enabled() {
    std::FILE *f = std::fopen("/proc/sys/kernel/bpf_stats_enabled", "r");
    if (f == nullptr) {
        return false;
    }
    int v = 0;
    bool on = std::fscanf(f, "%d", &v) == 1 && v != 0;
    std::fclose(f);
    return on;
}

program_dump program_of(int fd) {
    program_dump out;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
        return out;
    }
    out.id = info.id;
    out.run_cnt = info.run_cnt;
    out.run_time_ns = info.run_time_ns;
    std::vector<vm::ebpf_inst> insns(info.xlated_prog_len / sizeof(vm::ebpf_inst));
    bpf_prog_info again{};
    again.xlated_prog_len = static_cast<uint32_t>(insns.size() * sizeof(vm::ebpf_inst));
    again.xlated_prog_insns = reinterpret_cast<uint64_t>(insns.data());
    len = sizeof again;
    if (!insns.empty() && bpf_obj_get_info_by_fd(fd, &again, &len) == 0) {
        out.insns = std::move(insns);
    }
    return out;
}

namespace {

bool per_cpu(maps::map_type t) {
    return t == maps::map_type::percpu_array || t == maps::map_type::percpu_hash ||
           t == maps::map_type::lru_percpu_hash;
}

bool is_array(maps::map_type t) {
    return t == maps::map_type::array || t == maps::map_type::percpu_array;
}

// A kernel map. Per-CPU values go through the kernel in 8-byte-aligned slots; users see them
// packed, as in user space.
class kernel_map_access final : public map_access {
public:
    kernel_map_access(store::map_info info, unique_fd fd, inner_maps inner)
        : info_(std::move(info)), fd_(std::move(fd)), inner_(std::move(inner)) {}
    ~kernel_map_access() override { ring_buffer__free(ring_); }
    kernel_map_access(const kernel_map_access &) = delete;
    kernel_map_access &operator=(const kernel_map_access &) = delete;

    const store::map_info &info() const override { return info_; }

    // Whether values are bpftime ids of other objects (maps of maps, program arrays).
    bool holds_ids() const {
        return maps::is_map_in_map(info_.spec.type) ||
               info_.spec.type == maps::map_type::prog_array;
    }

    result<std::vector<uint8_t>> read(std::span<const uint8_t> key) const override {
        if (auto ok = maps::check_key(info_.spec, key, false); !ok) {
            return std::move(ok).err();
        }
        std::vector<uint8_t> raw(slot() * cpus());
        if (bpf_map_lookup_elem(fd_.get(), key.data(), raw.data()) != 0) {
            return errno == ENOENT ? make_error(ENOENT, "no such key") : failure("lookup");
        }
        if (holds_ids() && inner_.id_of && raw.size() >= 4) {
            // The kernel answers with the inner map's (or program's) kernel id; users name
            // them by bpftime id.
            uint32_t kernel_id = 0;
            std::memcpy(&kernel_id, raw.data(), sizeof kernel_id);
            uint32_t id = inner_.id_of(kernel_id);
            std::memcpy(raw.data(), &id, sizeof id);
            raw.resize(sizeof id);
        }
        if (!per_cpu(info_.spec.type)) {
            return raw;
        }
        std::vector<uint8_t> out(uint64_t{info_.spec.value_size} * cpus());
        for (uint32_t cpu = 0; cpu < cpus(); cpu++) {
            std::memcpy(out.data() + uint64_t{cpu} * info_.spec.value_size,
                        raw.data() + uint64_t{cpu} * slot(), info_.spec.value_size);
        }
        return out;
    }

    result<std::vector<uint8_t>> read_locked(std::span<const uint8_t> key) const override {
        if (auto ok = maps::check_key(info_.spec, key, false); !ok) {
            return std::move(ok).err();
        }
        std::vector<uint8_t> raw(info_.spec.value_size);
        if (bpf_map_lookup_elem_flags(fd_.get(), key.data(), raw.data(), BPF_F_LOCK) != 0) {
            int e = errno;
            if (e == ENOENT) {
                return make_error(ENOENT, "no such key");
            }
            if (e == EINVAL) {
                return make_error(EINVAL, "map " + std::to_string(info_.id) + " (" + info_.name +
                                              "): the kernel refused BPF_F_LOCK (its value has "
                                              "no struct bpf_spin_lock)");
            }
            return failure("lookup");
        }
        return raw;
    }

    result<void> write(std::span<const uint8_t> key, std::span<const uint8_t> value,
                       uint64_t flags) const override {
        if (auto ok = maps::check_key(info_.spec, key, false); !ok) {
            return ok;
        }
        uint32_t vs = info_.spec.value_size;
        bool every_cpu = value.size() == vs;
        if (!every_cpu && !(per_cpu(info_.spec.type) && value.size() == uint64_t{vs} * cpus())) {
            std::string want = std::to_string(vs);
            if (per_cpu(info_.spec.type)) {
                want += " or " + std::to_string(uint64_t{cpus()} * vs);
            }
            return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                          " bytes, the map takes " + want);
        }
        if (holds_ids() && inner_.fd_of) {
            // BPF_MAP_UPDATE_ELEM takes an fd of the inner map (or program), as libbpf gives it.
            uint32_t id = 0;
            std::memcpy(&id, value.data(), sizeof id);
            auto inner = inner_.fd_of(id);
            if (!inner) {
                return inner.err();
            }
            int inner_fd = inner->get();
            if (bpf_map_update_elem(fd_.get(), key.data(), &inner_fd, flags) != 0) {
                int e = errno;
                if (e == EEXIST || e == ENOENT || e == E2BIG) {
                    return maps::update_error(-e, info_.spec, flags);
                }
                if (e == EINVAL && info_.spec.type == maps::map_type::prog_array) {
                    return make_error(EINVAL,
                                      "the kernel refused program " + std::to_string(id) +
                                          " in prog_array " + std::to_string(info_.id) + " (" +
                                          info_.name +
                                          "): a tail call keeps its caller's context, so the "
                                          "programs of one array share the type of its callers");
                }
                return failure("update");
            }
            return {};
        }
        std::vector<uint8_t> raw(slot() * cpus());
        for (uint32_t cpu = 0; cpu < (per_cpu(info_.spec.type) ? cpus() : 1); cpu++) {
            std::memcpy(raw.data() + uint64_t{cpu} * slot(),
                        value.data() + (every_cpu ? 0 : uint64_t{cpu} * vs), vs);
        }
        if (bpf_map_update_elem(fd_.get(), key.data(), raw.data(), flags) != 0) {
            int e = errno;
            if (e == EEXIST || e == ENOENT || e == E2BIG || e == EINVAL) {
                return maps::update_error(-e, info_.spec, flags);
            }
            return failure("update");
        }
        return {};
    }

    result<void> erase(std::span<const uint8_t> key) const override {
        if (auto ok = maps::check_key(info_.spec, key, false); !ok) {
            return ok;
        }
        if (bpf_map_delete_elem(fd_.get(), key.data()) != 0) {
            int e = errno;
            if (e == ENOENT) {
                return make_error(ENOENT, "no such key");
            }
            if (e == EINVAL && is_array(info_.spec.type)) {
                return make_error(EINVAL, "array elements cannot be deleted");
            }
            return failure("delete");
        }
        return {};
    }

    result<std::optional<std::vector<uint8_t>>>
    next_key(std::span<const uint8_t> key) const override {
        if (auto ok = maps::check_key(info_.spec, key, true); !ok) {
            return std::move(ok).err();
        }
        std::vector<uint8_t> next(info_.spec.key_size);
        if (bpf_map_get_next_key(fd_.get(), key.empty() ? nullptr : key.data(), next.data()) != 0) {
            if (errno == ENOENT) {
                return std::optional<std::vector<uint8_t>>();
            }
            return failure("next key");
        }
        return std::optional<std::vector<uint8_t>>(std::move(next));
    }

    uint64_t count() const override {
        if (is_array(info_.spec.type) || info_.spec.type == maps::map_type::ringbuf) {
            return info_.spec.max_entries;
        }
        uint64_t n = 0;
        std::vector<uint8_t> key(info_.spec.key_size), next(info_.spec.key_size);
        bool first = true;
        // Bounded: a map that changes under the walk may restart it, never loop forever.
        while (n <= info_.spec.max_entries &&
               bpf_map_get_next_key(fd_.get(), first ? nullptr : key.data(), next.data()) == 0) {
            first = false;
            key.swap(next);
            n++;
        }
        return n;
    }

    result<void> push(std::span<const uint8_t> value, uint64_t flags) const override {
        if (auto ok = keyless(true, value); !ok) {
            return ok;
        }
        if (bpf_map_update_elem(fd_.get(), nullptr, value.data(), flags) != 0) {
            int e = errno;
            if (e == E2BIG || e == EINVAL) {
                return maps::update_error(-e, info_.spec, flags);
            }
            return failure("push");
        }
        return {};
    }

    result<std::vector<uint8_t>> pop() const override {
        if (auto ok = keyless(false, {}); !ok) {
            return std::move(ok).err();
        }
        std::vector<uint8_t> out(info_.spec.value_size);
        if (bpf_map_lookup_and_delete_elem(fd_.get(), nullptr, out.data()) != 0) {
            return empty_or_failure("pop");
        }
        return out;
    }

    result<std::vector<uint8_t>> peek(std::span<const uint8_t> value) const override {
        bool bloom = info_.spec.type == maps::map_type::bloom_filter;
        if (auto ok = keyless(bloom, value); !ok) {
            return std::move(ok).err();
        }
        std::vector<uint8_t> out(info_.spec.value_size);
        if (bloom) {
            std::copy(value.begin(), value.end(), out.begin());
        }
        if (bpf_map_lookup_elem(fd_.get(), nullptr, out.data()) != 0) {
            return empty_or_failure("peek");
        }
        return out;
    }

    result<std::vector<std::vector<uint8_t>>> values() const override {
        if (auto ok = keyless(false, {}); !ok) {
            return std::move(ok).err();
        }
        return make_error(EOPNOTSUPP, std::string("the kernel cannot list a ") +
                                          maps::map_type_name(info_.spec.type) +
                                          "'s values without popping them");
    }

    result<uint64_t> consume(const std::function<void(std::span<const uint8_t>)> &fn,
                             uint64_t max) override {
        if (auto r = ring(); !r) {
            return r.err();
        }
        consumer_ = &fn;
        delivered_ = 0;
        limit_ = max;
        int rc = max == 0 ? 0 : ring_buffer__consume(ring_);
        consumer_ = nullptr;
        if (rc < 0 && rc != stop) {
            return make_error(-rc, std::string("ring buffer: ") + std::strerror(-rc));
        }
        return delivered_;
    }

    void wait(int timeout_ms) override {
        if (!ring()) {
            return;
        }
        epoll_event ev{};
        (void)::epoll_wait(ring_buffer__epoll_fd(ring_), &ev, 1, timeout_ms);
    }

private:
    static constexpr int stop = -1000; // a callback's "enough records" (not an errno)

    uint32_t cpus() const { return per_cpu(info_.spec.type) ? info_.ncpus : 1; }
    uint64_t slot() const {
        return per_cpu(info_.spec.type) ? (uint64_t{info_.spec.value_size} + 7) / 8 * 8
                                        : info_.spec.value_size;
    }
    // The checks map_view makes for queues, stacks and bloom filters, with the same words.
    result<void> keyless(bool takes_value, std::span<const uint8_t> value) const {
        auto t = info_.spec.type;
        bool bloom = t == maps::map_type::bloom_filter;
        if (t != maps::map_type::queue && t != maps::map_type::stack && !(bloom && takes_value)) {
            return make_error(EINVAL, std::string("a ") + maps::map_type_name(t) +
                                          " map has no values to push, pop or peek (queue, "
                                          "stack" +
                                          (takes_value ? " or bloom_filter" : "") + " maps do)");
        }
        if (takes_value && value.size() != info_.spec.value_size) {
            return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                          " bytes, the map takes " +
                                          std::to_string(info_.spec.value_size));
        }
        return {};
    }
    error empty_or_failure(const char *op) const {
        if (errno != ENOENT) {
            return failure(op);
        }
        return info_.spec.type == maps::map_type::bloom_filter
                   ? make_error(ENOENT, "the value is not in the bloom filter")
                   : make_error(ENOENT, std::string("the ") + maps::map_type_name(info_.spec.type) +
                                            " is empty");
    }
    error failure(const char *op) const {
        int e = errno;
        return make_error(e,
                          "map " + std::to_string(info_.id) + ": " + op + ": " + std::strerror(e));
    }

    result<void> ring() {
        if (info_.spec.type != maps::map_type::ringbuf) {
            return make_error(EINVAL, std::string("a ") + maps::map_type_name(info_.spec.type) +
                                          " is not a ring buffer");
        }
        if (ring_ == nullptr) {
            ring_ = ring_buffer__new(fd_.get(), &kernel_map_access::on_record, this, nullptr);
            if (ring_ == nullptr) {
                int e = errno;
                return make_error(e, std::string("ring buffer: ") + std::strerror(e));
            }
        }
        return {};
    }

    // libbpf consumes the record a callback stops at, so the limit is checked after delivery.
    static int on_record(void *ctx, void *data, size_t size) {
        auto *self = static_cast<kernel_map_access *>(ctx);
        (*self->consumer_)(std::span<const uint8_t>(static_cast<const uint8_t *>(data), size));
        return ++self->delivered_ >= self->limit_ ? stop : 0;
    }

    store::map_info info_;
    unique_fd fd_;
    inner_maps inner_;
    ring_buffer *ring_ = nullptr;
    const std::function<void(std::span<const uint8_t>)> *consumer_ = nullptr;
    uint64_t delivered_ = 0;
    uint64_t limit_ = 0;
};

} // namespace

std::unique_ptr<map_access> make_map_access(store::map_info info, unique_fd fd, inner_maps inner) {
    return std::make_unique<kernel_map_access>(std::move(info), std::move(fd), std::move(inner));
}

} // namespace bpftime::kernel
