// SPDX-License-Identifier: MIT
// perf_event_open for the uprobe PMU, and the perf event ioctls on those fds.
//
// libbpf opens a uprobe as perf_event_open(type = the uprobe PMU's type, config1 = the
// binary's path, config2 = the probed instruction's FILE offset, config bit 0 = retprobe).
// Here that becomes a store target "BINARY:0xVADDR" (the file offset converted to the ELF
// virtual address through the binary's PT_LOAD headers, the form probe_target.cpp resolves),
// created when the event is opened so that a wrong place fails there, as the kernel's does.
// A reference counter (config bits 32-63, a USDT semaphore's file offset) becomes
// "(0xVADDR)" after it.
// libbpf's perf_buffer opens one BPF output event (PERF_TYPE_SOFTWARE,
// PERF_COUNT_SW_BPF_OUTPUT) per CPU and mmaps it: the mmap makes a perf_ring map in the store
// (its size is known only then) and maps the ring's pages, so the loader reads the records
// bpf_perf_event_output writes in the targets. The ring goes with the event's last fd and
// the perf event arrays holding it. A tracepoint event (PERF_TYPE_TRACEPOINT, config = the
// tracefs id) of category syscalls or raw_syscalls becomes a store target ("syscalls:NAME",
// "raw_syscalls:sys_enter"; the id found again among tracefs' events), hosted by the agents;
// other tracepoints, and events of every other type, are the kernel's.
#include "interposer.hpp"

#include <bpftime/attach/attach.hpp>

#include <elf.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

namespace bpftime::interposer {

namespace {

int read_sysfs_int(const char *path, const char *prefix) {
    std::ifstream in(path);
    std::string text;
    if (!std::getline(in, text) || text.rfind(prefix, 0) != 0) {
        return -1;
    }
    return std::atoi(text.c_str() + std::strlen(prefix));
}

int retprobe_bit() {
    static const int bit =
        read_sysfs_int("/sys/bus/event_source/devices/uprobe/format/retprobe", "config:");
    return bit < 0 ? 0 : bit;
}

// The ELF virtual address of a file offset in binary, through its PT_LOAD headers.
result<uint64_t> file_offset_to_vaddr(const std::string &binary, uint64_t off) {
    int fd = ::open(binary.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return make_error(errno, binary + ": " + std::strerror(errno));
    }
    Elf64_Ehdr eh{};
    result<uint64_t> out = make_error(
        EINVAL, binary + ": file offset 0x" + [&] {
            char b[24];
            std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(off));
            return std::string(b);
        }() + " is in no loadable segment");
    if (pread(fd, &eh, sizeof eh, 0) != sizeof eh ||
        std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr)) {
        out = make_error(ENOEXEC, binary + " is not a 64-bit ELF file");
    } else {
        for (unsigned i = 0; i < eh.e_phnum; i++) {
            Elf64_Phdr ph{};
            if (pread(fd, &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof ph)) !=
                sizeof ph) {
                break;
            }
            if (ph.p_type == PT_LOAD && off >= ph.p_offset && off - ph.p_offset < ph.p_filesz) {
                out = off - ph.p_offset + ph.p_vaddr;
                break;
            }
        }
    }
    real().close(fd);
    return out;
}

std::string hex(uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

long open_uprobe(const perf_event_attr &attr, int pid) {
    state &s = state::get();
    if (s.provider() == nullptr) {
        return fail(EPERM);
    }
    bool ret = (attr.config >> retprobe_bit()) & 1;
    uint64_t ref_ctr = attr.config >> 32;
    const char *path = reinterpret_cast<const char *>(static_cast<uintptr_t>(attr.config1));
    if (path == nullptr) {
        return fail(EINVAL);
    }
    std::string binary = path;
    auto vaddr = file_offset_to_vaddr(binary, attr.config2);
    if (!vaddr) {
        say_once("perf_event_open(uprobe): " + vaddr.err().message);
        return fail(vaddr.err().code);
    }
    std::string args = binary + ":" + hex(*vaddr);
    if (ref_ctr != 0) {
        // A USDT semaphore (libbpf's ref_ctr_offset, a file offset): hosts count the probe in
        // it while attached, as the kernel does.
        auto sem = file_offset_to_vaddr(binary, ref_ctr);
        if (!sem) {
            say_once("perf_event_open(uprobe " + args +
                     ") reference counter: " + sem.err().message);
            return fail(sem.err().code);
        }
        args += "(" + hex(*sem) + ")";
    }
    int32_t type = ret ? attach_type_uretprobe : attach_type_uprobe;
    auto target = s.provider()->create_attach_target(type, args);
    if (!target) {
        say_once("perf_event_open(uprobe " + args + "): " + target.err().message);
        return fail(target.err().code != 0 ? target.err().code : EINVAL);
    }
    if (pid > 0) {
        // Hosts run a user-space uprobe in every process that has the agent; the target
        // carries no process filter.
        say_once("uprobe " + args + " for pid " + std::to_string(pid) +
                 ": runs in every process that hosts it, not in that one only");
    }
    auto obj = std::make_shared<object>();
    obj->k = kind::perf_event;
    obj->owned = true;
    obj->attach_type = type;
    obj->target_id = *target;
    obj->target_args = args;
    obj->enabled = !attr.disabled;
    int fd = s.add(std::move(obj));
    return fd < 0 ? fail(errno) : fd;
}

long open_bpf_output(const perf_event_attr &attr, int pid, int cpu) {
    state &s = state::get();
    if (s.provider() == nullptr) {
        return fail(EPERM);
    }
    if (attr.sample_type != PERF_SAMPLE_RAW) {
        say_once("perf_event_open(bpf-output) with sample_type " + hex(attr.sample_type) +
                 ": only PERF_SAMPLE_RAW records are written in user space");
        return fail(EINVAL);
    }
    if (pid != -1) {
        say_once("a BPF output perf event for pid " + std::to_string(pid) +
                 " receives the records of every process");
    }
    auto obj = std::make_shared<object>();
    obj->k = kind::perf_event;
    obj->owned = true;
    obj->bpf_output = true;
    obj->cpu = cpu;
    obj->wakeup_events = attr.watermark ? 1 : std::max<uint32_t>(attr.wakeup_events, 1);
    obj->enabled = !attr.disabled;
    int fd = s.add(std::move(obj));
    return fd < 0 ? fail(errno) : fd;
}

// The system call tracepoint with this tracefs id as a target ("syscalls:sys_enter_openat",
// "raw_syscalls:sys_enter"), or "".
std::string syscall_event_by_id(uint64_t id) {
    static const std::map<uint64_t, std::string> events = [] {
        std::map<uint64_t, std::string> out;
        for (const char *root :
             {"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"}) {
            for (const char *category : {"syscalls", "raw_syscalls"}) {
                std::string dir = std::string(root) + "/" + category;
                DIR *d = opendir(dir.c_str());
                if (d == nullptr) {
                    continue;
                }
                while (dirent *e = readdir(d)) {
                    std::string name = e->d_name;
                    if (name.rfind("sys_", 0) != 0) {
                        continue;
                    }
                    std::ifstream in(dir + "/" + name + "/id");
                    uint64_t event_id = 0;
                    if (in >> event_id) {
                        out.emplace(event_id, std::string(category) + ":" + name);
                    }
                }
                closedir(d);
            }
            if (!out.empty()) {
                break;
            }
        }
        return out;
    }();
    auto it = events.find(id);
    return it == events.end() ? std::string() : it->second;
}

long open_syscall_tracepoint(const std::string &args, int pid) {
    state &s = state::get();
    if (s.provider() == nullptr) {
        return fail(EPERM);
    }
    auto target = s.provider()->create_attach_target(attach_type_tracepoint, args);
    if (!target) {
        say_once("perf_event_open(tracepoint " + args + "): " + target.err().message);
        return fail(target.err().code != 0 ? target.err().code : EINVAL);
    }
    if (pid > 0) {
        say_once("tracepoint " + args + " for pid " + std::to_string(pid) +
                 ": runs in every process that hosts it, not in that one only");
    }
    auto obj = std::make_shared<object>();
    obj->k = kind::perf_event;
    obj->owned = true;
    obj->attach_type = attach_type_tracepoint;
    obj->target_id = *target;
    obj->target_args = args;
    obj->enabled = true; // libbpf opens tracepoint events enabled
    int fd = s.add(std::move(obj));
    return fd < 0 ? fail(errno) : fd;
}

void *map_failed(int err) {
    errno = err;
    return MAP_FAILED;
}

} // namespace

void *perf_mmap(const std::shared_ptr<object> &pe, void *addr, size_t len, int prot, int flags,
                off_t off) {
    state &s = state::get();
    constexpr uint64_t page = maps::mmap_page_size;
    if (!pe->bpf_output) {
        return map_failed(ENODEV);
    }
    uint64_t data = len > page ? len - page : 0;
    if (off != 0 || !(flags & MAP_SHARED) || data == 0 || data % page != 0 ||
        (data & (data - 1)) != 0 || data > (1ull << 31)) {
        // As the kernel: one page, then a power-of-two number of data pages.
        return map_failed(EINVAL);
    }
    if (pe->ring_id != 0 && pe->ring_length != len) {
        return map_failed(EINVAL); // mapped already with another size
    }
    bool made = false;
    if (pe->ring_id == 0) {
        map_create_spec spec;
        spec.name = "perf_cpu" + std::to_string(pe->cpu);
        spec.spec = {maps::map_type::perf_ring, 0, 0, static_cast<uint32_t>(data), 0};
        auto id = s.provider()->create_map(spec);
        if (!id) {
            say_once("mmap of a BPF output perf event: " + id.err().message);
            return map_failed(id.err().code == ENOSPC || id.err().code == ENOMEM ? ENOMEM : EINVAL);
        }
        auto view = s.segment()->map_view(*id);
        if (!view) {
            (void)s.segment()->destroy(*id);
            say_once("mmap of a BPF output perf event: " + view.err().message);
            return map_failed(EINVAL);
        }
        view->perf_configure(pe->wakeup_events, pe->enabled);
        pe->ring_id = *id;
        pe->ring_length = len;
        pe->view = *view;
        made = true;
    }
    auto region = s.segment()->map_mmap_region(pe->ring_id);
    void *p = region ? real().mmap(addr, len, prot, flags, s.segment()->fd(),
                                   static_cast<off_t>(region->offset))
                     : map_failed(EINVAL);
    if (p == MAP_FAILED && made) {
        int e = errno;
        s.release(pe->ring_id);
        pe->ring_id = 0;
        pe->ring_length = 0;
        pe->view.reset();
        errno = e;
    }
    return p;
}

int uprobe_pmu_type() {
    static const int type = read_sysfs_int("/sys/bus/event_source/devices/uprobe/type", "");
    return type;
}

long do_perf_event_open(void *user_attr, long pid, long cpu, long group_fd, long flags) {
    auto *attr = static_cast<perf_event_attr *>(user_attr);
    int type = uprobe_pmu_type();
    bool bpf_output = attr != nullptr && attr->type == PERF_TYPE_SOFTWARE &&
                      attr->config == PERF_COUNT_SW_BPF_OUTPUT;
    if (attr != nullptr && attr->type == PERF_TYPE_TRACEPOINT) {
        std::string event = syscall_event_by_id(attr->config);
        if (event.empty()) {
            return real().syscall(SYS_perf_event_open, reinterpret_cast<long>(user_attr), pid, cpu,
                                  group_fd, flags, 0);
        }
        state &s = state::get();
        std::lock_guard lock(s.mu);
        inside_guard g;
        long rc = open_syscall_tracepoint(event, static_cast<int>(pid));
        if (debug()) {
            int e = errno;
            std::fprintf(stderr, "bpftime: perf_event_open(tracepoint %s) = %ld%s%s\n",
                         event.c_str(), rc, rc < 0 ? " " : "", rc < 0 ? std::strerror(e) : "");
            errno = e;
        }
        return rc;
    }
    if (attr == nullptr ||
        (!bpf_output && (type < 0 || attr->type != static_cast<uint32_t>(type)))) {
        return real().syscall(SYS_perf_event_open, reinterpret_cast<long>(user_attr), pid, cpu,
                              group_fd, flags, 0);
    }
    state &s = state::get();
    std::lock_guard lock(s.mu);
    inside_guard g;
    // The syscall's arguments are ints passed as longs: their upper halves are not defined.
    long rc = bpf_output ? open_bpf_output(*attr, static_cast<int>(pid), static_cast<int>(cpu))
                         : open_uprobe(*attr, static_cast<int>(pid));
    if (debug()) {
        int e = errno;
        std::fprintf(stderr, "bpftime: perf_event_open(%s) = %ld%s%s\n",
                     bpf_output ? "bpf-output" : "uprobe", rc, rc < 0 ? " " : "",
                     rc < 0 ? std::strerror(e) : "");
        errno = e;
    }
    return rc;
}

int perf_ioctl(const std::shared_ptr<object> &pe, unsigned long request, void *arg) {
    state &s = state::get();
    long rc = 0;
    switch (request) {
    case PERF_EVENT_IOC_SET_BPF: {
        if (pe->bpf_output) {
            rc = unsupported("attaching a program to a BPF output perf event", EINVAL);
            break;
        }
        auto prog = s.find(static_cast<int>(reinterpret_cast<intptr_t>(arg)), kind::prog);
        if (!prog) {
            rc = fail(EBADF);
        } else if (pe->ioctl_link_id != 0) {
            rc = fail(EEXIST);
        } else {
            rc = make_perf_link(prog, pe);
        }
        break;
    }
    case PERF_EVENT_IOC_ENABLE:
    case PERF_EVENT_IOC_DISABLE:
        pe->enabled = request == PERF_EVENT_IOC_ENABLE;
        if (pe->view) {
            pe->view->perf_configure(pe->wakeup_events, pe->enabled); // output fails while off
        }
        for (uint32_t id : pe->link_ids) {
            // Links destroyed since are gone from the store: nothing to switch.
            (void)(pe->enabled ? s.provider()->enable_link(id) : s.provider()->disable_link(id));
        }
        break;
    default:
        rc = unsupported("ioctl " + hex(request) + " on a " +
                             (pe->bpf_output                              ? "BPF output"
                              : pe->attach_type == attach_type_tracepoint ? "tracepoint"
                                                                          : "uprobe") +
                             " perf event",
                         ENOTTY);
    }
    if (debug()) {
        std::fprintf(stderr, "bpftime: ioctl(perf-event, %s) = %ld\n", hex(request).c_str(), rc);
    }
    return static_cast<int>(rc);
}

} // namespace bpftime::interposer
