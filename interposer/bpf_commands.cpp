// SPDX-License-Identifier: MIT
// bpf(cmd, attr, size) answered from the store, one handler per command, with the errnos the
// kernel gives. The attr and every pointer in it are the loader's own memory.
#include "interposer.hpp"

#include <bpftime/attach/attach.hpp>

#include <bpf/btf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>

namespace bpftime::interposer {

namespace {

// The raw tracepoint a tp_btf program names by attach_btf_id: the kernel's BTF types the
// tracepoint sys_enter as the typedef btf_trace_sys_enter. Empty with the reason in why when
// the id names no such typedef (or the kernel has no BTF to look it up in).
std::string btf_raw_tracepoint(uint32_t id, std::string &why) {
    static std::once_flag once;
    static btf *vmlinux = nullptr;
    static std::string load_error;
    std::call_once(once, [] {
        vmlinux = btf__load_vmlinux_btf();
        if (vmlinux == nullptr) {
            load_error = std::string("the kernel's BTF (/sys/kernel/btf/vmlinux) cannot be "
                                     "read: ") +
                         std::strerror(errno);
        }
    });
    if (vmlinux == nullptr) {
        why = load_error;
        return {};
    }
    constexpr std::string_view prefix = "btf_trace_";
    const btf_type *t = id != 0 ? btf__type_by_id(vmlinux, id) : nullptr;
    const char *name = t != nullptr ? btf__name_by_offset(vmlinux, t->name_off) : nullptr;
    if (t == nullptr || !btf_is_typedef(t) || name == nullptr ||
        std::string_view(name).substr(0, prefix.size()) != prefix) {
        why = "attach_btf_id " + std::to_string(id) +
              " names no raw tracepoint (a btf_trace_NAME typedef) in the kernel's BTF";
        return {};
    }
    return std::string(name + prefix.size());
}

const char *command_name(int cmd) {
    static const char *const names[] = {
        "BPF_MAP_CREATE",        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",   "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",  "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",           "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",       "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",     "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",   "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",  "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",          "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",     "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",  "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",  "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",       "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",      "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",       "BPF_PROG_BIND_MAP",
    };
    return cmd >= 0 && static_cast<size_t>(cmd) < std::size(names) ? names[cmd] : nullptr;
}

std::string cmd_text(int cmd) {
    const char *n = command_name(cmd);
    return std::string("bpf(") + (n ? n : "command " + std::to_string(cmd)) + ")";
}

template <class T = void>
T *ptr(uint64_t v) {
    return reinterpret_cast<T *>(static_cast<uintptr_t>(v));
}

// The kernel's ENOTSUPP (not ENOTSUP/EOPNOTSUPP), which bpf() gives for lookups in fd arrays.
constexpr int kernel_enotsupp = 524;

// The kernel's answer for an fd that is not the object asked for: EBADF when it is no fd.
long bad_fd(int fd) {
    return fail(fcntl(fd, F_GETFD) < 0 ? EBADF : EINVAL);
}

std::string fixed_string(const char *s, size_t cap) {
    return std::string(s, strnlen(s, cap));
}

// Copies a store error into the loader's log buffer, as the verifier's log.
// For a refusal of a helper bpftime does not have ("helper 67 (get_stack) is not available in
// bpftime"), the kernel verifier's line for a helper it does not offer, "unknown func
// bpf_get_stack#67", which libbpf's helper probe (libbpf_probe_bpf_helper) looks for: it then
// answers that the helper is not supported. Empty for other refusals.
std::string kernel_helper_line(const std::string &message) {
    const std::string tail = ") is not available in bpftime";
    size_t end = message.find(tail);
    size_t start = message.rfind("helper ", end);
    if (end == std::string::npos || start == std::string::npos) {
        return {};
    }
    std::string what = message.substr(start + 7, end - start - 7); // "67 (get_stack"
    size_t paren = what.find(" (");
    if (paren == std::string::npos) {
        return {};
    }
    return "\nunknown func bpf_" + what.substr(paren + 2) + "#" + what.substr(0, paren);
}

void write_log(uint64_t buf, uint32_t size, uint32_t level, const std::string &text) {
    if (buf == 0 || size == 0 || level == 0) {
        return;
    }
    std::snprintf(ptr<char>(buf), size, "%s\n", text.c_str());
}

// The bytes the loader's buffer holds for a per-CPU value: one value per CPU, each rounded up
// to 8 bytes, as the kernel lays them out (bpf_map_lookup_elem on a per-CPU map).
bool percpu(const store::map_info &m) {
    return m.spec.type == maps::map_type::percpu_array ||
           m.spec.type == maps::map_type::percpu_hash ||
           m.spec.type == maps::map_type::lru_percpu_hash;
}

void to_user(const store::map_info &m, const std::vector<uint8_t> &value, uint8_t *out) {
    if (!percpu(m)) {
        std::memcpy(out, value.data(), std::min<size_t>(value.size(), m.spec.value_size));
        return;
    }
    uint32_t vs = m.spec.value_size, stride = (vs + 7) / 8 * 8;
    std::memset(out, 0, uint64_t{stride} * m.ncpus);
    for (uint32_t cpu = 0; cpu < m.ncpus && uint64_t{cpu + 1} * vs <= value.size(); cpu++) {
        std::memcpy(out + uint64_t{cpu} * stride, value.data() + uint64_t{cpu} * vs, vs);
    }
}

std::vector<uint8_t> from_user(const store::map_info &m, const uint8_t *in) {
    if (!percpu(m)) {
        return {in, in + m.spec.value_size};
    }
    uint32_t vs = m.spec.value_size, stride = (vs + 7) / 8 * 8;
    std::vector<uint8_t> out(uint64_t{vs} * m.ncpus);
    for (uint32_t cpu = 0; cpu < m.ncpus; cpu++) {
        std::memcpy(out.data() + uint64_t{cpu} * vs, in + uint64_t{cpu} * stride, vs);
    }
    return out;
}

class handler {
public:
    handler(state &s, int cmd, union bpf_attr &attr, void *user_attr, unsigned size)
        : s_(s), cmd_(cmd), a_(attr), user_(user_attr), size_(size) {}

    long run() {
        switch (cmd_) {
        case BPF_MAP_CREATE:
            return map_create();
        case BPF_MAP_LOOKUP_ELEM:
            return map_lookup(false);
        case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
            return map_lookup(true);
        case BPF_MAP_UPDATE_ELEM:
            return map_update();
        case BPF_MAP_DELETE_ELEM:
            return map_delete();
        case BPF_MAP_GET_NEXT_KEY:
            return map_next_key();
        case BPF_MAP_LOOKUP_BATCH:
            return map_lookup_batch(false);
        case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
            return map_lookup_batch(true);
        case BPF_MAP_FREEZE:
            return map_freeze();
        case BPF_PROG_LOAD:
            return prog_load();
        case BPF_BTF_LOAD:
            return btf_load();
        case BPF_OBJ_GET_INFO_BY_FD:
            return get_info();
        case BPF_LINK_CREATE:
            return link_create();
        case BPF_RAW_TRACEPOINT_OPEN:
            return raw_tracepoint_open();
        case BPF_LINK_UPDATE:
            return link_update();
        case BPF_LINK_DETACH:
            return link_detach();
        case BPF_OBJ_PIN:
            return obj_pin();
        case BPF_OBJ_GET:
            return obj_get();
        case BPF_PROG_GET_NEXT_ID:
        case BPF_MAP_GET_NEXT_ID:
        case BPF_LINK_GET_NEXT_ID:
            return next_id();
        case BPF_BTF_GET_NEXT_ID:
            return btf_next_id();
        case BPF_PROG_GET_FD_BY_ID:
        case BPF_MAP_GET_FD_BY_ID:
        case BPF_LINK_GET_FD_BY_ID:
            return fd_by_id();
        case BPF_BTF_GET_FD_BY_ID:
            return btf_fd_by_id();
        case BPF_ENABLE_STATS:
            return unsupported(cmd_text(cmd_) + " (run time statistics)", EOPNOTSUPP);
        default:
            if (command_name(cmd_) == nullptr) {
                return unsupported(cmd_text(cmd_), EINVAL);
            }
            return unsupported(cmd_text(cmd_), EOPNOTSUPP);
        }
    }

private:
    event_provider_impl &p() { return *s_.provider(); }

    // A failed store call: errno from the error, the message once on stderr.
    long store_error(const error &e, const std::string &what) {
        say_once(cmd_text(cmd_) + " " + what + ": " + e.message);
        return fail(e.code != 0 ? e.code : EINVAL);
    }

    // Writes attr back to the loader (commands that return values in it).
    void write_back() { std::memcpy(user_, &a_, std::min<size_t>(size_, sizeof a_)); }

    long map_create() {
        static const std::pair<uint32_t, const char *> known[] = {
            {BPF_MAP_TYPE_HASH, "hash"},
            {BPF_MAP_TYPE_ARRAY, "array"},
            {BPF_MAP_TYPE_PERCPU_HASH, "percpu_hash"},
            {BPF_MAP_TYPE_PERCPU_ARRAY, "percpu_array"},
            // Its updates carry cgroup fds of this (the loader's) process, which the map
            // resolves to cgroup ids in place (maps::cgroup_id_of_fd).
            {BPF_MAP_TYPE_CGROUP_ARRAY, "cgroup_array"},
            {BPF_MAP_TYPE_LRU_HASH, "lru_hash"},
            {BPF_MAP_TYPE_RINGBUF, "ringbuf"},
            {BPF_MAP_TYPE_PERF_EVENT_ARRAY, "perf_event_array"},
            {BPF_MAP_TYPE_LRU_PERCPU_HASH, "lru_percpu_hash"},
            {BPF_MAP_TYPE_STACK_TRACE, "stack_trace"},
            {BPF_MAP_TYPE_LPM_TRIE, "lpm_trie"},
            {BPF_MAP_TYPE_QUEUE, "queue"},
            {BPF_MAP_TYPE_STACK, "stack"},
            {BPF_MAP_TYPE_BLOOM_FILTER, "bloom_filter"},
            // Its updates carry program fds of this process; slots keep the programs' ids.
            {BPF_MAP_TYPE_PROG_ARRAY, "prog_array"},
            // inner_map_fd names a map of this process whose spec becomes the template;
            // updates carry map fds, slots keep the maps' ids.
            {BPF_MAP_TYPE_ARRAY_OF_MAPS, "array_of_maps"},
            {BPF_MAP_TYPE_HASH_OF_MAPS, "hash_of_maps"},
        };
        bool supported = std::any_of(std::begin(known), std::end(known),
                                     [&](auto &k) { return k.first == a_.map_type; });
        if (!supported) {
            return unsupported("bpf(BPF_MAP_CREATE) of map type " + std::to_string(a_.map_type) +
                                   " (" + maps::linux_map_type_name(a_.map_type) + ")",
                               EINVAL);
        }
        map_create_spec spec;
        spec.name = fixed_string(a_.map_name, sizeof a_.map_name);
        spec.spec.type = static_cast<maps::map_type>(a_.map_type);
        spec.spec.key_size = a_.key_size;
        spec.spec.value_size = a_.value_size;
        spec.spec.max_entries = a_.max_entries;
        spec.spec.map_extra = a_.map_extra;
        // Access flags of the syscall side and of programs are the fd's and the store's, not
        // the map storage's.
        constexpr uint32_t access =
            BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG;
        spec.spec.flags = a_.map_flags & ~access;
        spec.read_only = (a_.map_flags & BPF_F_RDONLY_PROG) != 0;
        if (a_.map_ifindex != 0) {
            return fail(EINVAL);
        }
        if (maps::is_map_in_map(spec.spec.type)) {
            // As the kernel: the template is taken from inner_map_fd at creation.
            auto inner = map_of(a_.inner_map_fd);
            if (!inner) {
                return bad_fd(static_cast<int>(a_.inner_map_fd));
            }
            auto tmpl = maps::inner_template_of(inner->map.spec);
            if (!tmpl) {
                return store_error(tmpl.err(), "'" + spec.name + "'");
            }
            spec.spec.inner = *tmpl;
        } else if (a_.inner_map_fd != 0) {
            return fail(EINVAL);
        }
        if (a_.btf_fd != 0 && a_.btf_value_type_id != 0) {
            // The value's struct bpf_spin_lock, which BPF_F_LOCK reads and writes take.
            if (auto b = s_.find(static_cast<int>(a_.btf_fd), kind::btf)) {
                std::unique_ptr<struct btf, void (*)(struct btf *)> parsed(
                    btf__new(b->btf.data(), static_cast<uint32_t>(b->btf.size())), btf__free);
                if (parsed) {
                    auto lock = loader::spin_lock_offset(parsed.get(), a_.btf_value_type_id);
                    if (!lock) {
                        return store_error(lock.err(), "'" + spec.name + "'");
                    }
                    spec.spec.spin_lock_off = *lock;
                }
            }
        }
        auto id = p().create_map(spec);
        if (!id) {
            return store_error(id.err(), "'" + spec.name + "'");
        }
        auto obj = std::make_shared<object>();
        obj->k = kind::map;
        obj->id = *id;
        obj->owned = true;
        obj->map_flags = a_.map_flags;
        obj->btf_id = a_.btf_fd != 0 ? btf_id_of(static_cast<int>(a_.btf_fd)) : 0;
        obj->btf_key_type_id = a_.btf_key_type_id;
        obj->btf_value_type_id = a_.btf_value_type_id;
        return finish_map(std::move(obj));
    }

    uint32_t btf_id_of(int fd) {
        auto b = s_.find(fd, kind::btf);
        return b ? b->id : 0;
    }

    // Opens the view and hands out the fd.
    long finish_map(std::shared_ptr<object> obj) {
        auto info = s_.segment()->map(obj->id);
        if (!info) {
            return store_error(info.err(), "map " + std::to_string(obj->id));
        }
        obj->map = *info;
        auto view = s_.segment()->map_view(obj->id);
        if (!view) {
            return store_error(view.err(), "map " + std::to_string(obj->id));
        }
        obj->view = *view;
        if (obj->map_flags == 0) {
            obj->map_flags = info->spec.flags;
        }
        int fd = s_.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

    std::shared_ptr<object> map_of(uint32_t fd) { return s_.find(static_cast<int>(fd), kind::map); }

    long map_lookup(bool and_delete) {
        auto m = map_of(a_.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.map_fd));
        }
        if (m->map.spec.type == maps::map_type::ringbuf) {
            return fail(and_delete ? EOPNOTSUPP : EINVAL);
        }
        if (m->map.spec.type == maps::map_type::perf_event_array) {
            return fail(and_delete ? EOPNOTSUPP : kernel_enotsupp); // as the kernel
        }
        if ((a_.flags & ~uint64_t{BPF_F_LOCK}) != 0) {
            return fail(EINVAL);
        }
        const bool locked = a_.flags == BPF_F_LOCK;
        if (locked && m->map.spec.spin_lock_off < 0) {
            return fail(EINVAL); // as the kernel: the value has no struct bpf_spin_lock
        }
        if (keyless(m->map)) {
            return keyless_lookup(*m, and_delete);
        }
        std::span<const uint8_t> key(ptr<const uint8_t>(a_.key), m->map.spec.key_size);
        auto v =
            locked ? read_value_locked(m->map, *m->view, key) : read_value(m->map, *m->view, key);
        if (!v) {
            return fail(v.err().code);
        }
        to_user(m->map, *v, ptr<uint8_t>(a_.value));
        if (and_delete) {
            if (auto r = m->view->erase(key); !r) {
                return fail(r.err().code);
            }
        }
        return 0;
    }

    static bool keyless(const store::map_info &m) {
        return m.spec.type == maps::map_type::queue || m.spec.type == maps::map_type::stack ||
               m.spec.type == maps::map_type::bloom_filter;
    }

    // BPF_MAP_LOOKUP_ELEM with no key peeks (a bloom filter tests the value given), and
    // BPF_MAP_LOOKUP_AND_DELETE_ELEM pops, as the kernel does.
    long keyless_lookup(const object &m, bool and_delete) {
        bool bloom = m.map.spec.type == maps::map_type::bloom_filter;
        if (bloom && and_delete) {
            return fail(kernel_enotsupp);
        }
        std::span<const uint8_t> in;
        if (bloom) {
            in = {ptr<const uint8_t>(a_.value), m.map.spec.value_size};
        }
        auto v = and_delete ? m.view->pop() : m.view->peek(in);
        if (!v) {
            return fail(v.err().code);
        }
        if (!bloom) {
            std::memcpy(ptr(a_.value), v->data(), v->size());
        }
        return 0;
    }

    long map_update() {
        auto m = map_of(a_.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.map_fd));
        }
        if (s_.frozen.count(m->id) != 0 || (m->map_flags & BPF_F_RDONLY) != 0) {
            return fail(EPERM);
        }
        if (m->map.spec.type == maps::map_type::ringbuf) {
            return fail(EINVAL);
        }
        const bool locked = (a_.flags & BPF_F_LOCK) != 0;
        if ((a_.flags & ~uint64_t{BPF_F_LOCK}) > BPF_EXIST ||
            (locked && m->map.spec.spin_lock_off < 0)) {
            return fail(EINVAL); // as the kernel: BPF_F_LOCK needs a struct bpf_spin_lock
        }
        if (keyless(m->map)) {
            // As the kernel: the key is ignored and the value pushed.
            std::span<const uint8_t> value(ptr<const uint8_t>(a_.value), m->map.spec.value_size);
            if (auto r = m->view->push(value, a_.flags); !r) {
                return fail(r.err().code);
            }
            return 0;
        }
        std::span<const uint8_t> key(ptr<const uint8_t>(a_.key), m->map.spec.key_size);
        if (m->map.spec.type == maps::map_type::perf_event_array) {
            return perf_array_update(m, key);
        }
        if (m->map.spec.type == maps::map_type::prog_array) {
            return prog_array_update(m, key);
        }
        if (maps::is_map_in_map(m->map.spec.type)) {
            return map_in_map_update(m, key);
        }
        auto value = from_user(m->map, ptr<const uint8_t>(a_.value));
        if (auto r = write_value(m->map, *m->view, key, value, a_.flags); !r) {
            return fail(r.err().code);
        }
        return 0;
    }

    long map_delete() {
        auto m = map_of(a_.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.map_fd));
        }
        if (s_.frozen.count(m->id) != 0) {
            return fail(EPERM);
        }
        if (m->map.spec.type == maps::map_type::ringbuf) {
            return fail(EINVAL);
        }
        if (keyless(m->map)) {
            // As the kernel: queues and stacks give EINVAL, bloom filters EOPNOTSUPP.
            return fail(m->map.spec.type == maps::map_type::bloom_filter ? EOPNOTSUPP : EINVAL);
        }
        std::span<const uint8_t> key(ptr<const uint8_t>(a_.key), m->map.spec.key_size);
        if (auto r = m->view->erase(key); !r) {
            return fail(r.err().code);
        }
        if (maps::is_map_in_map(m->map.spec.type)) {
            s_.retry_pending(); // an inner map whose fds were closed goes with its last entry
        }
        if (m->map.spec.type == maps::map_type::perf_event_array) {
            uint32_t index = 0;
            std::memcpy(&index, key.data(), sizeof index);
            m->perf_slots.erase(index);
        }
        return 0;
    }

    // The value is a perf event fd of the loader: the slot gets the store id of its ring, which
    // programs in other processes write to, and the map holds the event as the kernel's does.
    long perf_array_update(const std::shared_ptr<object> &m, std::span<const uint8_t> key) {
        int pfd = *ptr<const int>(a_.value);
        auto pe = s_.find(pfd, kind::perf_event);
        if (!pe) {
            if (pfd < 0 || fcntl(pfd, F_GETFD) < 0) {
                return fail(EBADF);
            }
            if (s_.find(pfd)) {
                return fail(EINVAL); // a map, program or link: not a perf event
            }
            return unsupported("a kernel perf event in a user-space perf event array (only BPF "
                               "output events opened under bpftime)",
                               EOPNOTSUPP);
        }
        if (!pe->bpf_output) {
            return unsupported("a uprobe perf event in a perf event array (only BPF output "
                               "events, PERF_COUNT_SW_BPF_OUTPUT)",
                               EOPNOTSUPP);
        }
        if (pe->ring_id == 0) {
            say_once("perf event fd " + std::to_string(pfd) +
                     " is added to a perf event array before it is mmap'ed: the ring is made by "
                     "the mmap, so mmap the event first (as libbpf's perf_buffer does)");
            return fail(EINVAL);
        }
        uint32_t id = pe->ring_id;
        if (auto r =
                m->view->write(key, {reinterpret_cast<const uint8_t *>(&id), sizeof id}, a_.flags);
            !r) {
            return fail(r.err().code);
        }
        uint32_t index = 0;
        std::memcpy(&index, key.data(), sizeof index);
        m->perf_slots[index] = pe;
        return 0;
    }

    // The value is a program fd of the loader: the slot gets the program's store id, which
    // bpf_tail_call in any host finds (a lookup gives the id back, as the kernel's does).
    long prog_array_update(const std::shared_ptr<object> &m, std::span<const uint8_t> key) {
        int pfd = *ptr<const int>(a_.value);
        auto prog = s_.find(pfd, kind::prog);
        if (!prog) {
            if (pfd < 0 || fcntl(pfd, F_GETFD) < 0) {
                return fail(EBADF);
            }
            return fail(EINVAL); // a map, link or another fd: not a program
        }
        uint32_t id = prog->id;
        // As the kernel (bpf_prog_map_compatible): EINVAL for a program of another type.
        if (auto ok = check_prog_array_member(*s_.segment(), m->id, id); !ok) {
            if (ok.err().code == EINVAL) {
                say_once(cmd_text(cmd_) + ": " + ok.err().message);
            }
            return fail(ok.err().code);
        }
        if (auto r =
                m->view->write(key, {reinterpret_cast<const uint8_t *>(&id), sizeof id}, a_.flags);
            !r) {
            return fail(r.err().code);
        }
        return 0;
    }

    // The value is a map fd of the loader: the store checks the map against the outer map's
    // template and the entry keeps its id, which a lookup gives back (as the kernel gives its
    // map id). The map stays while an entry holds it, whatever the loader closes.
    long map_in_map_update(const std::shared_ptr<object> &m, std::span<const uint8_t> key) {
        int mfd = *ptr<const int>(a_.value);
        auto inner = map_of(static_cast<uint32_t>(mfd));
        if (!inner) {
            if (mfd < 0 || fcntl(mfd, F_GETFD) < 0) {
                return fail(EBADF);
            }
            return fail(EINVAL); // a program, link or another fd: not a map
        }
        if (auto r = s_.segment()->set_inner_map(m->id, key, inner->id, a_.flags); !r) {
            if (r.err().code == EINVAL) {
                say_once(cmd_text(cmd_) + ": " + r.err().message);
            }
            return fail(r.err().code);
        }
        s_.retry_pending(); // the entry may have released an inner map whose fds were closed
        return 0;
    }

    long map_next_key() {
        auto m = map_of(a_.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.map_fd));
        }
        if (m->map.spec.type == maps::map_type::ringbuf) {
            return fail(EINVAL);
        }
        if (keyless(m->map)) {
            return fail(m->map.spec.type == maps::map_type::bloom_filter ? EOPNOTSUPP : EINVAL);
        }
        std::span<const uint8_t> key;
        if (a_.key != 0) {
            key = {ptr<const uint8_t>(a_.key), m->map.spec.key_size};
        }
        auto next = m->view->next_key(key);
        if (!next) {
            return fail(next.err().code);
        }
        if (!*next) {
            return fail(ENOENT);
        }
        std::memcpy(ptr(a_.next_key), (*next)->data(), (*next)->size());
        return 0;
    }

    // BPF_MAP_LOOKUP_BATCH and BPF_MAP_LOOKUP_AND_DELETE_BATCH: up to count keys and values in
    // key order from where the last call left off; ENOENT (with the count copied) once the walk
    // ends, as the kernel. The batch token is 4 bytes, as the kernel's for hashes and arrays:
    // the number of keys already walked (a walk that deletes always starts again at the first
    // key, the ones before it being gone).
    long map_lookup_batch(bool and_delete) {
        auto m = map_of(a_.batch.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.batch.map_fd));
        }
        const maps::map_type t = m->map.spec.type;
        const bool array = t == maps::map_type::array || t == maps::map_type::percpu_array;
        const bool hash = t == maps::map_type::hash || t == maps::map_type::percpu_hash ||
                          t == maps::map_type::lru_hash || t == maps::map_type::lru_percpu_hash;
        if ((!array && !hash) || (and_delete && array) || a_.batch.flags != 0 ||
            (a_.batch.elem_flags & ~uint64_t{BPF_F_LOCK}) != 0 || a_.batch.count == 0) {
            return fail(EINVAL);
        }
        const bool locked = (a_.batch.elem_flags & BPF_F_LOCK) != 0;
        if (locked && m->map.spec.spin_lock_off < 0) {
            return fail(EINVAL); // as the kernel: the value has no struct bpf_spin_lock
        }
        if (and_delete && s_.frozen.count(m->id) != 0) {
            return fail(EPERM);
        }
        uint32_t skip = 0;
        if (a_.batch.in_batch != 0 && !and_delete) {
            std::memcpy(&skip, ptr<const void>(a_.batch.in_batch), sizeof skip);
        }
        const uint32_t ks = m->map.spec.key_size;
        const uint64_t vs = percpu(m->map)
                                ? uint64_t{(m->map.spec.value_size + 7) / 8 * 8} * m->map.ncpus
                                : m->map.spec.value_size;
        auto *keys = ptr<uint8_t>(a_.batch.keys);
        auto *values = ptr<uint8_t>(a_.batch.values);
        uint32_t n = 0, walked = 0;
        bool ended = false;
        std::vector<uint8_t> key;
        std::vector<std::vector<uint8_t>> taken;
        // Bounded as map dump is: a map changing all the while cannot keep the walk going.
        const uint64_t most = 2 * uint64_t{m->map.spec.max_entries} + 64;
        for (uint64_t steps = 0; n < a_.batch.count; steps++) {
            if (steps > most) {
                ended = true;
                break;
            }
            auto next = m->view->next_key(key);
            if (!next) {
                return fail(next.err().code);
            }
            if (!*next) {
                ended = true;
                break;
            }
            key = std::move(**next);
            if (walked++ < skip) {
                continue;
            }
            auto value = locked ? read_value_locked(m->map, *m->view, key)
                                : read_value(m->map, *m->view, key);
            if (!value) {
                if (value.err().code == ENOENT) {
                    continue; // removed meanwhile
                }
                return fail(value.err().code);
            }
            std::memcpy(keys + uint64_t{n} * ks, key.data(), ks);
            to_user(m->map, *value, values + n * vs);
            if (and_delete) {
                taken.push_back(key);
            }
            n++;
        }
        for (const auto &k : taken) {
            (void)m->view->erase(k);
        }
        uint32_t token = and_delete ? 0 : walked;
        if (a_.batch.out_batch != 0) {
            std::memcpy(ptr<void>(a_.batch.out_batch), &token, sizeof token);
        }
        static_cast<union bpf_attr *>(user_)->batch.count = n;
        return ended ? fail(ENOENT) : 0;
    }

    long map_freeze() {
        auto m = map_of(a_.map_fd);
        if (!m) {
            return bad_fd(static_cast<int>(a_.map_fd));
        }
        if (!s_.frozen.insert(m->id).second) {
            return fail(EBUSY);
        }
        return 0;
    }

    long prog_load() {
        if (a_.insn_cnt == 0 || a_.insn_cnt > 1'000'000 || a_.insns == 0) {
            return fail(EINVAL);
        }
        const auto *in = ptr<const vm::ebpf_inst>(a_.insns);
        program_spec spec;
        spec.name = fixed_string(a_.prog_name, sizeof a_.prog_name);
        spec.type = a_.prog_type;
        // tp_btf: a raw tracepoint program whose tracepoint the kernel's BTF names; it runs
        // on the raw tracepoint's context (the arguments as u64s), as raw_tracepoint ones do.
        std::string btf_tracepoint;
        if (a_.prog_type == BPF_PROG_TYPE_TRACING && a_.expected_attach_type == BPF_TRACE_RAW_TP) {
            std::string why;
            btf_tracepoint = btf_raw_tracepoint(a_.attach_btf_id, why);
            if (btf_tracepoint.empty()) {
                write_log(a_.log_buf, a_.log_size, a_.log_level, why + "\n");
                say_once("program " + fixed_string(a_.prog_name, sizeof a_.prog_name) + ": " + why);
                return fail(EINVAL);
            }
            spec.type = BPF_PROG_TYPE_RAW_TRACEPOINT;
        }
        spec.insns.assign(in, in + a_.insn_cnt);
        std::vector<std::shared_ptr<object>> used;
        // lddw map references name maps by fd (or by index into fd_array): the store's
        // programs name them by object id.
        for (size_t i = 0; i + 1 < spec.insns.size(); i++) {
            vm::ebpf_inst &insn = spec.insns[i];
            if (insn.opcode != 0x18) {
                continue;
            }
            uint8_t src = insn.src;
            int fd = -1;
            if (src == BPF_PSEUDO_MAP_FD || src == BPF_PSEUDO_MAP_VALUE) {
                fd = insn.imm;
            } else if (src == BPF_PSEUDO_MAP_IDX || src == BPF_PSEUDO_MAP_IDX_VALUE) {
                if (a_.fd_array == 0) {
                    write_log(a_.log_buf, a_.log_size, a_.log_level,
                              "insn " + std::to_string(i) + ": map index without fd_array");
                    return fail(EINVAL);
                }
                fd = ptr<const int>(a_.fd_array)[insn.imm];
                src = src == BPF_PSEUDO_MAP_IDX ? BPF_PSEUDO_MAP_FD : BPF_PSEUDO_MAP_VALUE;
            } else {
                i++;
                continue;
            }
            auto m = map_of(static_cast<uint32_t>(fd));
            if (!m) {
                write_log(a_.log_buf, a_.log_size, a_.log_level,
                          "fd " + std::to_string(fd) + " is not pointing to valid bpf_map");
                return bad_fd(fd);
            }
            insn.src = src;
            insn.imm = static_cast<int32_t>(m->id);
            if (std::find(spec.map_ids.begin(), spec.map_ids.end(), m->id) == spec.map_ids.end()) {
                spec.map_ids.push_back(m->id);
                used.push_back(m);
            }
            i++;
        }
        auto id = p().create_program(spec);
        if (!id) {
            write_log(a_.log_buf, a_.log_size, a_.log_level,
                      id.err().message + kernel_helper_line(id.err().message));
            int code = id.err().code;
            return fail(code == EACCES || code == E2BIG || code == ENOMEM ? code : EINVAL);
        }
        if (a_.log_buf != 0 && a_.log_size != 0) {
            ptr<char>(a_.log_buf)[0] = '\0';
        }
        auto obj = std::make_shared<object>();
        obj->k = kind::prog;
        obj->id = *id;
        obj->owned = true;
        obj->prog_type = a_.prog_type;
        obj->expected_attach_type = a_.expected_attach_type;
        obj->btf_tracepoint = std::move(btf_tracepoint);
        obj->insn_count = a_.insn_cnt;
        obj->map_ids = spec.map_ids;
        obj->btf_id = a_.prog_btf_fd != 0 ? btf_id_of(static_cast<int>(a_.prog_btf_fd)) : 0;
        obj->holds = std::move(used);
        int fd = s_.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

    long btf_load() {
        if (a_.btf == 0 || a_.btf_size == 0 || a_.btf_size > (64u << 20)) {
            return fail(EINVAL);
        }
        // Kept, not checked: programs here carry no BTF-dependent instructions, and
        // OBJ_GET_INFO_BY_FD gives the blob back.
        const auto *b = ptr<const uint8_t>(a_.btf);
        auto obj = std::make_shared<object>();
        obj->k = kind::btf;
        obj->id = s_.next_btf_id++;
        obj->btf.assign(b, b + a_.btf_size);
        if (a_.btf_log_buf != 0 && a_.btf_log_size != 0) {
            ptr<char>(a_.btf_log_buf)[0] = '\0';
        }
        int fd = s_.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

    // Fills the kernel's info struct T for the loader: the loader's info_len bytes at most,
    // and info_len set to what was written.
    template <class T>
    long give_info(T &info) {
        uint32_t len = std::min<uint32_t>(a_.info.info_len, sizeof(T));
        std::memcpy(ptr(a_.info.info), &info, len);
        a_.info.info_len = len;
        write_back();
        return 0;
    }

    template <class T>
    T user_info() {
        T info{};
        std::memcpy(&info, ptr(a_.info.info), std::min<size_t>(a_.info.info_len, sizeof(T)));
        return info;
    }

    long get_info() {
        auto obj = s_.find(static_cast<int>(a_.info.bpf_fd));
        if (!obj) {
            return bad_fd(static_cast<int>(a_.info.bpf_fd));
        }
        if (a_.info.info == 0) {
            return fail(EFAULT);
        }
        switch (obj->k) {
        case kind::map: {
            bpf_map_info info{};
            info.type = static_cast<uint32_t>(obj->map.spec.type);
            info.id = obj->id;
            info.key_size = obj->map.spec.key_size;
            info.value_size = obj->map.spec.value_size;
            info.max_entries = obj->map.spec.max_entries;
            info.map_flags = obj->map_flags;
            info.map_extra = obj->map.spec.map_extra;
            std::strncpy(info.name, obj->map.name.c_str(), sizeof info.name - 1);
            info.btf_id = obj->btf_id;
            info.btf_key_type_id = obj->btf_key_type_id;
            info.btf_value_type_id = obj->btf_value_type_id;
            return give_info(info);
        }
        case kind::prog: {
            auto in = user_info<bpf_prog_info>();
            bpf_prog_info info{};
            auto p = s_.segment()->program(obj->id);
            info.type = obj->prog_type;
            info.id = obj->id;
            if (p) {
                std::strncpy(info.name, p->name.c_str(), sizeof info.name - 1);
            }
            info.xlated_prog_len = obj->insn_count * 8;
            if (in.xlated_prog_insns != 0 && p) {
                std::memcpy(ptr(in.xlated_prog_insns), p->insns.data(),
                            std::min<size_t>(in.xlated_prog_len, p->insns.size() * 8));
                info.xlated_prog_insns = in.xlated_prog_insns;
            }
            info.nr_map_ids = static_cast<uint32_t>(obj->map_ids.size());
            if (in.map_ids != 0) {
                std::memcpy(ptr(in.map_ids), obj->map_ids.data(),
                            std::min<size_t>(in.nr_map_ids, obj->map_ids.size()) * 4);
                info.map_ids = in.map_ids;
            }
            info.created_by_uid = geteuid();
            info.btf_id = obj->btf_id;
            return give_info(info);
        }
        case kind::link: {
            bpf_link_info info{};
            info.type = obj->link_type;
            info.id = obj->id;
            if (auto l = s_.segment()->link(obj->id); l && !obj->detached) {
                info.prog_id = l->prog_id;
            }
            return give_info(info);
        }
        case kind::btf: {
            auto in = user_info<bpf_btf_info>();
            bpf_btf_info info{};
            info.id = obj->id;
            info.btf_size = static_cast<uint32_t>(obj->btf.size());
            if (in.btf != 0) {
                if (in.btf_size < obj->btf.size()) {
                    return fail(ENOSPC);
                }
                std::memcpy(ptr(in.btf), obj->btf.data(), obj->btf.size());
                info.btf = in.btf;
            }
            if (in.name != 0 && in.name_len != 0) {
                ptr<char>(in.name)[0] = '\0';
                info.name = in.name;
                info.name_len = 0;
            }
            return give_info(info);
        }
        case kind::perf_event:
            return fail(EINVAL);
        }
        return fail(EINVAL);
    }

    long link_create() {
        auto prog = s_.find(static_cast<int>(a_.link_create.prog_fd), kind::prog);
        if (!prog) {
            return bad_fd(static_cast<int>(a_.link_create.prog_fd));
        }
        if (a_.link_create.attach_type == BPF_TRACE_RAW_TP) {
            // libbpf's attach of tp_btf programs; the tracepoint is the program's own.
            if (a_.link_create.target_fd != 0) {
                return fail(EINVAL);
            }
            if (prog->btf_tracepoint.empty()) {
                say_once("bpf(BPF_LINK_CREATE) with BPF_TRACE_RAW_TP takes a tp_btf program (its "
                         "tracepoint named by attach_btf_id); program " +
                         std::to_string(prog->id) + " has type " + std::to_string(prog->prog_type) +
                         " (a raw_tracepoint program names its tracepoint through "
                         "BPF_RAW_TRACEPOINT_OPEN)");
                return fail(EINVAL);
            }
            return raw_tracepoint_link(prog, prog->btf_tracepoint, a_.link_create.tracing.cookie);
        }
        if (a_.link_create.attach_type != BPF_PERF_EVENT) {
            return unsupported("bpf(BPF_LINK_CREATE) with attach type " +
                                   std::to_string(a_.link_create.attach_type),
                               EINVAL);
        }
        int target_fd = static_cast<int>(a_.link_create.target_fd);
        auto pe = s_.find(target_fd, kind::perf_event);
        if (!pe) {
            if (target_fd < 0 || fcntl(target_fd, F_GETFD) < 0) {
                return fail(EBADF);
            }
            return unsupported("bpf(BPF_LINK_CREATE) of a user-space program on a kernel perf "
                               "event (only uprobes and uretprobes run here)",
                               EOPNOTSUPP);
        }
        return make_link(prog, pe, a_.link_create.perf_event.bpf_cookie, true);
    }

    // A raw tracepoint link: sys_enter and sys_exit are hosted by the agents; a program loaded
    // here cannot go to the kernel's other raw tracepoints.
    long raw_tracepoint_open() {
        auto prog = s_.find(static_cast<int>(a_.raw_tracepoint.prog_fd), kind::prog);
        if (!prog) {
            return bad_fd(static_cast<int>(a_.raw_tracepoint.prog_fd));
        }
        const auto *name_ptr =
            reinterpret_cast<const char *>(static_cast<uintptr_t>(a_.raw_tracepoint.name));
        if (name_ptr == nullptr) {
            // A tp_btf program without a name: its own tracepoint (older libbpf's attach). Any
            // other program: the kernel reads the name from address 0.
            if (prog->btf_tracepoint.empty()) {
                return fail(EFAULT);
            }
            return raw_tracepoint_link(prog, prog->btf_tracepoint, 0);
        }
        const std::string name(name_ptr, strnlen(name_ptr, 128));
        if (!prog->btf_tracepoint.empty()) {
            // As the kernel: a tp_btf program's tracepoint is the one its BTF id names.
            say_once("program " + std::to_string(prog->id) + " is a tp_btf program of " +
                     prog->btf_tracepoint + ": BPF_RAW_TRACEPOINT_OPEN takes no name for it (" +
                     name + " given)");
            return fail(EINVAL);
        }
        return raw_tracepoint_link(prog, name, 0);
    }

    // A raw tracepoint link of prog at name (BPF_RAW_TRACEPOINT_OPEN, or BPF_LINK_CREATE with
    // BPF_TRACE_RAW_TP for tp_btf programs): the same link either way.
    long raw_tracepoint_link(const std::shared_ptr<object> &prog, const std::string &name,
                             uint64_t cookie) {
        if (prog->prog_type != BPF_PROG_TYPE_RAW_TRACEPOINT && prog->btf_tracepoint.empty()) {
            say_once("raw tracepoint " + name + " takes raw_tracepoint programs; program " +
                     std::to_string(prog->id) + " has type " + std::to_string(prog->prog_type));
            return fail(EINVAL);
        }
        auto target = p().create_attach_target(attach_type_raw_tracepoint, name);
        if (!target) {
            return store_error(target.err(), "raw tracepoint " + name);
        }
        auto id = p().attach_program(prog->id, *target, cookie);
        if (!id) {
            (void)p().destroy_object(*target);
            return store_error(id.err(), "raw tracepoint " + name);
        }
        auto obj = std::make_shared<object>();
        obj->k = kind::link;
        obj->id = *id;
        obj->owned = true;
        obj->link_type = BPF_LINK_TYPE_RAW_TRACEPOINT;
        obj->target_id = *target;
        obj->holds = {prog};
        int fd = s_.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

public:
    // A link of prog on a uprobe perf event; as_fd: handed to the loader as a link fd, else
    // held by the perf event (PERF_EVENT_IOC_SET_BPF).
    static long make_link(state &s, const std::shared_ptr<object> &prog,
                          const std::shared_ptr<object> &pe, uint64_t cookie, bool as_fd) {
        const bool tracepoint = pe->attach_type == attach_type_tracepoint;
        const uint32_t wanted = tracepoint ? BPF_PROG_TYPE_TRACEPOINT : BPF_PROG_TYPE_KPROBE;
        if (prog->prog_type != wanted) {
            say_once(std::string(tracepoint ? "a tracepoint perf event takes tracepoint"
                                            : "a uprobe perf event takes kprobe") +
                     " programs; program " + std::to_string(prog->id) + " has type " +
                     std::to_string(prog->prog_type));
            return fail(EINVAL);
        }
        auto id = s.provider()->attach_program(prog->id, pe->target_id, cookie);
        if (!id) {
            say_once("attaching program " + std::to_string(prog->id) + " at " + pe->target_args +
                     ": " + id.err().message);
            return fail(id.err().code != 0 ? id.err().code : EINVAL);
        }
        if (!pe->enabled) {
            (void)s.provider()->disable_link(*id);
        }
        pe->link_ids.push_back(*id);
        if (!as_fd) {
            pe->ioctl_link_id = *id;
            pe->holds.push_back(prog);
            return 0;
        }
        auto obj = std::make_shared<object>();
        obj->k = kind::link;
        obj->id = *id;
        obj->owned = true;
        obj->link_type = BPF_LINK_TYPE_PERF_EVENT;
        obj->holds = {prog, pe};
        int fd = s.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

private:
    long make_link(const std::shared_ptr<object> &prog, const std::shared_ptr<object> &pe,
                   uint64_t cookie, bool as_fd) {
        return make_link(s_, prog, pe, cookie, as_fd);
    }

    long link_update() {
        auto link = s_.find(static_cast<int>(a_.link_update.link_fd), kind::link);
        if (!link) {
            return bad_fd(static_cast<int>(a_.link_update.link_fd));
        }
        auto prog = s_.find(static_cast<int>(a_.link_update.new_prog_fd), kind::prog);
        if (!prog) {
            return bad_fd(static_cast<int>(a_.link_update.new_prog_fd));
        }
        if (link->detached) {
            return fail(ENOLINK);
        }
        if (a_.link_update.flags & BPF_F_REPLACE) {
            auto old = s_.find(static_cast<int>(a_.link_update.old_prog_fd), kind::prog);
            auto l = s_.segment()->link(link->id);
            if (!old || !l || l->prog_id != old->id) {
                return fail(EPERM);
            }
        } else if (a_.link_update.flags != 0) {
            return fail(EINVAL);
        }
        if (auto r = p().update_link(link->id, prog->id); !r) {
            return store_error(r.err(), "link " + std::to_string(link->id));
        }
        // The link now keeps the new program, not the old one.
        std::erase_if(link->holds, [](auto &h) { return h->k == kind::prog; });
        link->holds.push_back(prog);
        return 0;
    }

    long link_detach() {
        auto link = s_.find(static_cast<int>(a_.link_detach.link_fd), kind::link);
        if (!link) {
            return bad_fd(static_cast<int>(a_.link_detach.link_fd));
        }
        if (link->detached) {
            return fail(ENOLINK);
        }
        link->detached = true;
        s_.release(link->id);
        link->holds.clear();
        return 0;
    }

    long obj_pin() {
        auto obj = s_.find(static_cast<int>(a_.bpf_fd));
        if (!obj) {
            return bad_fd(static_cast<int>(a_.bpf_fd));
        }
        if (a_.pathname == 0) {
            return fail(EFAULT);
        }
        if (obj->k == kind::btf || obj->k == kind::perf_event) {
            return fail(EINVAL);
        }
        if (auto r = pin_add(ptr<const char>(a_.pathname), obj->id); !r) {
            if (r.err().code != EEXIST) {
                say_once(r.err().message);
            }
            return fail(r.err().code);
        }
        return 0;
    }

    long obj_get() {
        if (a_.pathname == 0) {
            return fail(EFAULT);
        }
        auto id = pin_find(ptr<const char>(a_.pathname));
        if (!id) {
            return fail(id.err().code);
        }
        return fd_for_id(*id, std::nullopt);
    }

    // An fd for a store object this process did not create.
    long fd_for_id(uint32_t id, std::optional<kind> want) {
        auto snap = s_.segment()->read_all();
        if (!snap) {
            return store_error(snap.err(), "object " + std::to_string(id));
        }
        auto obj = std::make_shared<object>();
        obj->id = id;
        obj->owned = false;
        bool found = false;
        for (const auto &m : snap->maps) {
            if (m.id == id) {
                obj->k = kind::map;
                found = true;
            }
        }
        for (const auto &pr : snap->programs) {
            if (pr.id == id) {
                obj->k = kind::prog;
                obj->prog_type = pr.type;
                obj->insn_count = static_cast<uint32_t>(pr.insns.size());
                obj->map_ids = pr.map_ids;
                found = true;
            }
        }
        for (const auto &l : snap->links) {
            if (l.id == id) {
                obj->k = kind::link;
                obj->link_type = BPF_LINK_TYPE_PERF_EVENT;
                found = true;
            }
        }
        if (!found || (want && obj->k != *want)) {
            return fail(ENOENT);
        }
        if (obj->k == kind::map) {
            return finish_map(std::move(obj));
        }
        int fd = s_.add(std::move(obj));
        return fd < 0 ? fail(errno) : fd;
    }

    long next_id() {
        auto snap = s_.segment()->read_all();
        if (!snap) {
            return store_error(snap.err(), "listing");
        }
        std::vector<uint32_t> ids;
        if (cmd_ == BPF_PROG_GET_NEXT_ID) {
            for (auto &x : snap->programs) {
                ids.push_back(x.id);
            }
        } else if (cmd_ == BPF_MAP_GET_NEXT_ID) {
            for (auto &x : snap->maps) {
                ids.push_back(x.id);
            }
        } else {
            for (auto &x : snap->links) {
                ids.push_back(x.id);
            }
        }
        std::sort(ids.begin(), ids.end());
        auto it = std::upper_bound(ids.begin(), ids.end(), a_.start_id);
        if (it == ids.end()) {
            return fail(ENOENT);
        }
        a_.next_id = *it;
        write_back();
        return 0;
    }

    long btf_next_id() {
        uint32_t best = 0;
        for (auto &[fd, obj] : s_.fds) {
            if (obj->k == kind::btf && obj->id > a_.start_id && (best == 0 || obj->id < best)) {
                best = obj->id;
            }
        }
        if (best == 0) {
            return fail(ENOENT);
        }
        a_.next_id = best;
        write_back();
        return 0;
    }

    long fd_by_id() {
        kind want = cmd_ == BPF_PROG_GET_FD_BY_ID  ? kind::prog
                    : cmd_ == BPF_MAP_GET_FD_BY_ID ? kind::map
                                                   : kind::link;
        // An object of this process gets another fd on the same object.
        for (auto &[fd, obj] : s_.fds) {
            if (obj->k == want && obj->id == a_.prog_id) {
                int nfd = s_.add(obj);
                return nfd < 0 ? fail(errno) : nfd;
            }
        }
        return fd_for_id(a_.prog_id, want);
    }

    long btf_fd_by_id() {
        for (auto &[fd, obj] : s_.fds) {
            if (obj->k == kind::btf && obj->id == a_.btf_id) {
                int nfd = s_.add(obj);
                return nfd < 0 ? fail(errno) : nfd;
            }
        }
        return fail(ENOENT);
    }

    state &s_;
    int cmd_;
    union bpf_attr &a_;
    void *user_;
    unsigned size_;
};

} // namespace

long make_perf_link(const std::shared_ptr<object> &prog, const std::shared_ptr<object> &pe) {
    return handler::make_link(state::get(), prog, pe, 0, false);
}

long do_bpf(int cmd, void *user_attr, unsigned size) {
    state &s = state::get();
    std::lock_guard lock(s.mu);
    inside_guard g;
    union bpf_attr attr;
    std::memset(&attr, 0, sizeof attr);
    if (user_attr == nullptr) {
        return fail(EFAULT);
    }
    std::memcpy(&attr, user_attr, std::min<size_t>(size, sizeof attr));
    long rc;
    if (s.provider() == nullptr) {
        rc = fail(EPERM);
    } else {
        handler h(s, cmd, attr, user_attr, size);
        rc = h.run();
    }
    if (debug()) {
        int e = errno;
        std::fprintf(stderr, "bpftime: %s = %ld%s%s\n", cmd_text(cmd).c_str(), rc,
                     rc < 0 ? " " : "", rc < 0 ? std::strerror(e) : "");
        errno = e;
    }
    return rc;
}

} // namespace bpftime::interposer
