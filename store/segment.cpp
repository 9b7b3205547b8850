// SPDX-License-Identifier: MIT
// The shared-memory segment: opening, creating and checking it, the writer lock, and the
// object API over the object table (layout.hpp) and the heap (heap.hpp).
#include "heap.hpp"
#include "layout.hpp"

#include <bpftime/store/store.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <type_traits>
#include <unistd.h>

namespace bpftime::store {

using namespace detail;

namespace {

std::string shm_path(const std::string &name) {
    return "/" + name;
}

result<void> check_name(const std::string &name) {
    if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos) {
        return make_error(EINVAL,
                          "bad segment name '" + name + "': 1 to 200 characters without '/'");
    }
    return {};
}

void copy_name(char (&dst)[max_name + 1], const std::string &src) {
    std::memset(dst, 0, sizeof dst);
    std::memcpy(dst, src.data(), std::min(src.size(), max_name));
}

std::string read_name(const char *src, size_t cap) {
    return std::string(src, strnlen(src, cap));
}

} // namespace

std::string segment_name(const std::string &explicit_name) {
    if (!explicit_name.empty()) {
        return explicit_name;
    }
    if (const char *env = std::getenv("BPFTIME_SHM"); env != nullptr && *env != '\0') {
        return env;
    }
    return default_segment_name;
}

const char *kind_name(object_kind kind) {
    switch (kind) {
    case object_kind::program:
        return "program";
    case object_kind::map:
        return "map";
    case object_kind::target:
        return "target";
    case object_kind::link:
        return "link";
    }
    return "unknown";
}

struct segment::impl {
    uint8_t *base = nullptr;
    uint64_t size = 0;
    std::string name;

    header *hdr() const { return reinterpret_cast<header *>(base); }
    slot *slots() const { return reinterpret_cast<slot *>(base + hdr()->table_offset); }
    uint32_t max_objects() const { return hdr()->max_objects; }

    ~impl() {
        if (base != nullptr) {
            munmap(base, size);
        }
    }

    // --- locking ---

    class guard {
    public:
        explicit guard(pthread_mutex_t *m) : m_(m) {}
        guard(guard &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
        ~guard() {
            if (m_ != nullptr) {
                pthread_mutex_unlock(m_);
            }
        }

    private:
        pthread_mutex_t *m_;
    };

    result<guard> lock() const {
        int rc = pthread_mutex_lock(&hdr()->lock);
        if (rc == EOWNERDEAD) {
            // A writer died holding the lock: drop what it half-created, then carry on.
            recover();
            pthread_mutex_consistent(&hdr()->lock);
        } else if (rc != 0) {
            return make_error(rc, "segment " + name + ": cannot take the writer lock: " +
                                      std::strerror(rc) + " (run `bpftime reset`)");
        }
        return guard(&hdr()->lock);
    }

    void recover() const {
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (s.state == slot_creating) {
                store_release(s.state, slot_free);
            }
            // An unfinished replace either published its extent (pending == extent) or not
            // (the old instructions stay); both ways the pending reference goes.
            s.pending = 0;
        }
        bump();
    }

    void bump() const { __atomic_fetch_add(&hdr()->generation, 1, __ATOMIC_RELEASE); }

    // --- objects ---

    slot *find(uint32_t id) const {
        if (id == 0) {
            return nullptr;
        }
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (load_acquire(s.state) == slot_live && s.id == id) {
                return &s;
            }
        }
        return nullptr;
    }

    result<slot *> find_kind(uint32_t id, object_kind kind) const {
        slot *s = find(id);
        if (s == nullptr) {
            return make_error(ENOENT, "no object with id " + std::to_string(id));
        }
        if (s->kind != static_cast<uint32_t>(kind)) {
            return make_error(EINVAL, "object " + std::to_string(id) + " is a " +
                                          kind_name(static_cast<object_kind>(s->kind)) +
                                          ", not a " + kind_name(kind));
        }
        return s;
    }

    // Reads one object of a kind under the lock.
    template <class F>
    auto read_object(uint32_t id, object_kind kind, F &&read) const
        -> result<std::invoke_result_t<F, const slot &>> {
        auto g = lock();
        if (!g) {
            return g.err();
        }
        auto s = find_kind(id, kind);
        if (!s) {
            return s.err();
        }
        return read(**s);
    }

    // Starts a new object in a free slot; it stays invisible until publish().
    result<slot *> begin(object_kind kind, const std::string &object_name) const {
        if (object_name.size() > max_name) {
            return make_error(ENAMETOOLONG, "name '" + object_name + "' is longer than " +
                                                std::to_string(max_name) + " bytes");
        }
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (s.state == slot_free) {
                std::memset(static_cast<void *>(&s), 0, sizeof s);
                s.id = hdr()->next_id++;
                s.kind = static_cast<uint32_t>(kind);
                copy_name(s.name, object_name);
                store_release(s.state, slot_creating);
                return &s;
            }
        }
        return make_error(ENOSPC, "segment " + name + " is full: all " +
                                      std::to_string(max_objects()) + " object slots are used");
    }

    uint32_t publish(slot *s) const {
        store_release(s->state, slot_live);
        bump();
        return s->id;
    }

    void abandon(slot *s) const { store_release(s->state, slot_free); }

    // --- heap ---

    detail::heap objects() const { return {base, name}; }
    result<uint64_t> allocate(uint64_t payload, uint32_t owner) const {
        return objects().allocate(payload, owner);
    }
    void *payload(uint64_t off) const { return objects().payload(off); }
    uint64_t payload_size(uint64_t off) const { return objects().payload_size(off); }

    // Writes a program payload into a new extent owned by s.
    result<uint64_t> write_program(slot *s, const std::vector<vm::ebpf_inst> &insns,
                                   const std::vector<uint32_t> &map_ids) const {
        if (insns.empty()) {
            return make_error(EINVAL, "a program needs at least one instruction");
        }
        if (map_ids.size() > max_program_maps) {
            return make_error(E2BIG, "a program may use at most " +
                                         std::to_string(max_program_maps) + " maps");
        }
        for (uint32_t map_id : map_ids) {
            if (auto m = find_kind(map_id, object_kind::map); !m) {
                return make_error(m.err().code, "the program refers to map " +
                                                    std::to_string(map_id) + ": " +
                                                    m.err().message);
            }
        }
        uint64_t bytes = sizeof(program_payload) + insns.size() * sizeof(vm::ebpf_inst) +
                         map_ids.size() * sizeof(uint32_t);
        auto off = allocate(bytes, s->id);
        if (!off) {
            return off;
        }
        auto *p = static_cast<program_payload *>(payload(*off));
        p->insn_count = static_cast<uint32_t>(insns.size());
        p->map_count = static_cast<uint32_t>(map_ids.size());
        auto *code = reinterpret_cast<uint8_t *>(p + 1);
        std::memcpy(code, insns.data(), insns.size() * sizeof(vm::ebpf_inst));
        // std::copy, not memcpy: an empty vector's data() may be null.
        std::copy(map_ids.begin(), map_ids.end(),
                  reinterpret_cast<uint32_t *>(code + insns.size() * sizeof(vm::ebpf_inst)));
        return off;
    }

    // The objects that depend on id: programs on maps, links on programs and targets.
    std::vector<uint32_t> dependents(uint32_t id) const {
        std::vector<uint32_t> out;
        for (uint32_t i = 0; i < max_objects(); i++) {
            const slot &s = slots()[i];
            if (s.state != slot_live) {
                continue;
            }
            if (s.kind == static_cast<uint32_t>(object_kind::link) &&
                (s.prog_id == id || s.target_id == id)) {
                out.push_back(s.id);
            } else if (s.kind == static_cast<uint32_t>(object_kind::program) && s.extent != 0) {
                auto ids = program_maps(s);
                if (std::find(ids.begin(), ids.end(), id) != ids.end()) {
                    out.push_back(s.id);
                }
            }
        }
        return out;
    }

    std::vector<uint32_t> program_maps(const slot &s) const {
        const auto *p = static_cast<const program_payload *>(payload(s.extent));
        const auto *ids = reinterpret_cast<const uint32_t *>(
            reinterpret_cast<const uint8_t *>(p + 1) + p->insn_count * sizeof(vm::ebpf_inst));
        return {ids, ids + p->map_count};
    }

    program_info to_program(const slot &s) const {
        program_info info{s.id,        read_name(s.name, sizeof s.name),
                          s.prog_type, read_name(s.section, sizeof s.section),
                          {},          program_maps(s),
                          s.revision};
        const auto *p = static_cast<const program_payload *>(payload(s.extent));
        info.insns.resize(p->insn_count);
        std::memcpy(static_cast<void *>(info.insns.data()), p + 1,
                    p->insn_count * sizeof(vm::ebpf_inst));
        return info;
    }

    map_info to_map(const slot &s) const {
        return {s.id,
                read_name(s.name, sizeof s.name),
                {static_cast<maps::map_type>(s.map_type), s.key_size, s.value_size, s.max_entries,
                 s.map_flags},
                s.ncpus,
                s.read_only != 0};
    }

    target_info to_target(const slot &s) const {
        auto *args = static_cast<const char *>(payload(s.extent));
        return {s.id, read_name(s.name, sizeof s.name), s.attach_type,
                std::string(args, strnlen(args, payload_size(s.extent)))};
    }

    link_info to_link(const slot &s) const {
        link_info info{s.id,
                       read_name(s.name, sizeof s.name),
                       s.prog_id,
                       s.target_id,
                       load_acquire(s.enabled) != 0,
                       0,
                       0};
        info.cookie = s.cookie;
        for (const counter_stripe &c : s.counters) {
            info.runs += __atomic_load_n(&c.runs, __ATOMIC_RELAXED);
            info.faults += __atomic_load_n(&c.faults, __ATOMIC_RELAXED);
        }
        return info;
    }
};

segment::~segment() = default;

result<std::shared_ptr<segment>> segment::open(const std::string &name, const open_options &opts) {
    if (auto r = check_name(name); !r) {
        return r.err();
    }
    std::string path = shm_path(name);
    uint64_t min_size = round_up(sizeof(header), align) +
                        static_cast<uint64_t>(opts.max_objects) * sizeof(slot) + 4 * align;
    bool created = false;
    int fd = -1;
    if (opts.create) {
        fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, opts.mode);
        created = fd >= 0;
        if (created) {
            // shm_open's mode is filtered by the umask; say exactly what was asked.
            fchmod(fd, opts.mode);
            if (opts.size < min_size || ftruncate(fd, static_cast<off_t>(opts.size)) != 0) {
                int e = opts.size < min_size ? EINVAL : errno;
                close(fd);
                shm_unlink(path.c_str());
                return make_error(e, "segment " + name + ": cannot size it to " +
                                         std::to_string(opts.size) + " bytes (at least " +
                                         std::to_string(min_size) + " needed)");
            }
        } else if (errno != EEXIST) {
            return make_error(errno, "segment " + name + ": " + std::strerror(errno));
        }
    }
    if (fd < 0) {
        fd = shm_open(path.c_str(), O_RDWR, 0);
        if (fd < 0) {
            int e = errno;
            if (e == ENOENT) {
                return make_error(ENOENT, "no segment named " + name);
            }
            return make_error(e, "segment " + name + ": " + std::strerror(e));
        }
    }

    auto seg = std::shared_ptr<segment>(new segment());
    seg->name_ = name;
    seg->impl_ = std::make_unique<impl>();
    impl &im = *seg->impl_;
    im.name = name;

    // A segment another process is creating right now may not be sized yet.
    struct stat st {};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) < sizeof(header) && !created &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (static_cast<uint64_t>(st.st_size) < sizeof(header)) {
        close(fd);
        return make_error(EBADF, "segment " + name + " is too small (" +
                                     std::to_string(st.st_size) +
                                     " bytes) to be a bpftime segment");
    }
    im.size = static_cast<uint64_t>(st.st_size);
    void *p = mmap(nullptr, im.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        return make_error(errno, "segment " + name + ": mmap: " + std::strerror(errno));
    }
    im.base = static_cast<uint8_t *>(p);
    header *h = im.hdr();

    if (created) {
        std::memcpy(h->magic, segment_magic, sizeof segment_magic);
        h->layout_version = layout_version;
        h->header_size = sizeof(header);
        h->size = im.size;
        h->max_objects = opts.max_objects;
        h->slot_size = sizeof(slot);
        h->table_offset = round_up(sizeof(header), align);
        h->heap_offset = round_up(h->table_offset + opts.max_objects * sizeof(slot), align);
        h->heap_size = im.size - h->heap_offset;
        h->next_id = 1;
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&h->lock, &attr);
        pthread_mutexattr_destroy(&attr);
        store_release(h->ready, 1u);
        return seg;
    }

    if (std::memcmp(h->magic, segment_magic, sizeof segment_magic) != 0) {
        // Maybe still being initialised by its creator.
        while (load_acquire(h->ready) == 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (std::memcmp(h->magic, segment_magic, sizeof segment_magic) != 0) {
            return make_error(EPROTO, "segment " + name +
                                          " is not a bpftime segment (bad magic); remove it "
                                          "with `bpftime reset` if it is stale");
        }
    }
    if (h->layout_version != layout_version) {
        return make_error(EPROTO, "segment " + name + " has layout version " +
                                      std::to_string(h->layout_version) + "; this bpftime uses " +
                                      std::to_string(layout_version) +
                                      ": use the matching bpftime, or `bpftime reset` to start "
                                      "over (removes every object)");
    }
    if (load_acquire(h->ready) != 1 || h->size != im.size || h->slot_size != sizeof(slot) ||
        h->header_size != sizeof(header) || h->heap_offset + h->heap_size > im.size ||
        h->table_offset + uint64_t{h->max_objects} * sizeof(slot) > h->heap_offset) {
        return make_error(EPROTO, "segment " + name +
                                      " is corrupt (its header does not describe its size); "
                                      "run `bpftime reset`");
    }
    return seg;
}

result<void> segment::remove(const std::string &name) {
    if (auto r = check_name(name); !r) {
        return r;
    }
    if (shm_unlink(shm_path(name).c_str()) != 0) {
        if (errno == ENOENT) {
            return make_error(ENOENT, "no segment named " + name);
        }
        return make_error(errno, "segment " + name + ": " + std::strerror(errno));
    }
    return {};
}

uint64_t segment::generation() const {
    return __atomic_load_n(&impl_->hdr()->generation, __ATOMIC_ACQUIRE);
}

result<uint32_t> segment::create_program(const std::string &name, uint32_t type,
                                         const std::string &section,
                                         const std::vector<vm::ebpf_inst> &insns,
                                         const std::vector<uint32_t> &map_ids) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::program, name);
    if (!s) {
        return s.err();
    }
    auto off = impl_->write_program(*s, insns, map_ids);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    (*s)->extent = *off;
    (*s)->prog_type = type;
    std::strncpy((*s)->section, section.c_str(), sizeof((*s)->section) - 1);
    return impl_->publish(*s);
}

result<void> segment::replace_program(uint32_t id, const std::vector<vm::ebpf_inst> &insns,
                                      const std::vector<uint32_t> &map_ids) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->find_kind(id, object_kind::program);
    if (!s) {
        return s.err();
    }
    auto off = impl_->write_program(*s, insns, map_ids);
    if (!off) {
        return off.err();
    }
    // pending keeps the new extent allocated while it is written; one store publishes it.
    // The revision moves first: a writer dying before the switch only costs hosts a
    // needless recompile.
    (*s)->pending = *off;
    (*s)->revision++;
    store_release((*s)->extent, *off);
    (*s)->pending = 0;
    impl_->bump();
    return {};
}

result<uint32_t> segment::create_map(const std::string &name, const maps::map_spec &spec,
                                     const std::vector<uint8_t> &initial_value, bool read_only) {
    if (auto r = maps::validate_spec(spec); !r) {
        return make_error(r.err().code, "map " + name + ": " + r.err().message);
    }
    uint32_t ncpus = maps::possible_cpus();
    auto bytes = maps::storage_size(spec, ncpus);
    if (!bytes) {
        return bytes.err();
    }
    if (!initial_value.empty() &&
        (spec.type != maps::map_type::array || initial_value.size() != spec.value_size)) {
        return make_error(EINVAL, "map " + name +
                                      ": an initial value needs an array map whose "
                                      "value size is the value's size");
    }
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::map, name);
    if (!s) {
        return s.err();
    }
    auto off = impl_->allocate(*bytes, (*s)->id);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    slot &sl = **s;
    sl.extent = *off;
    sl.map_type = static_cast<uint32_t>(spec.type);
    sl.key_size = spec.key_size;
    sl.value_size = spec.value_size;
    sl.max_entries = spec.max_entries;
    sl.map_flags = spec.flags;
    sl.ncpus = ncpus;
    sl.read_only = read_only ? 1 : 0;
    void *storage = impl_->payload(*off);
    if (auto r = maps::init_storage(storage, *bytes, spec, ncpus); !r) {
        impl_->abandon(*s);
        return r.err();
    }
    if (!initial_value.empty()) {
        auto view = maps::map_view::open(storage, *bytes, spec);
        uint32_t key = 0;
        auto w = view ? view->write({reinterpret_cast<uint8_t *>(&key), sizeof key}, initial_value)
                      : result<void>(view.err());
        if (!w) {
            impl_->abandon(*s);
            return w.err();
        }
    }
    return impl_->publish(*s);
}

result<uint32_t> segment::create_target(const std::string &name, int32_t attach_type,
                                        const std::string &args) {
    if (args.size() > 4096) {
        return make_error(E2BIG, "attach target arguments are longer than 4096 bytes");
    }
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::target, name);
    if (!s) {
        return s.err();
    }
    auto off = impl_->allocate(args.size() + 1, (*s)->id);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    std::memcpy(impl_->payload(*off), args.c_str(), args.size() + 1);
    (*s)->extent = *off;
    (*s)->attach_type = attach_type;
    return impl_->publish(*s);
}

result<uint32_t> segment::create_link(const std::string &name, uint32_t prog_id, uint32_t target_id,
                                      bool enabled, uint64_t cookie) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    if (auto p = impl_->find_kind(prog_id, object_kind::program); !p) {
        return p.err();
    }
    if (auto t = impl_->find_kind(target_id, object_kind::target); !t) {
        return t.err();
    }
    auto s = impl_->begin(object_kind::link, name);
    if (!s) {
        return s.err();
    }
    (*s)->prog_id = prog_id;
    (*s)->target_id = target_id;
    (*s)->enabled = enabled ? 1 : 0;
    (*s)->cookie = cookie;
    return impl_->publish(*s);
}

result<void> segment::set_link_enabled(uint32_t id, bool enabled) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->find_kind(id, object_kind::link);
    if (!s) {
        return s.err();
    }
    store_release((*s)->enabled, enabled ? 1u : 0u);
    impl_->bump();
    return {};
}

result<void> segment::destroy(uint32_t id) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    slot *s = impl_->find(id);
    if (s == nullptr) {
        return make_error(ENOENT, "no object with id " + std::to_string(id));
    }
    if (auto users = impl_->dependents(id); !users.empty()) {
        std::string list;
        for (uint32_t u : users) {
            list += (list.empty() ? "" : ", ") + std::to_string(u);
        }
        return make_error(EBUSY, std::string(kind_name(static_cast<object_kind>(s->kind))) + " " +
                                     std::to_string(id) + " is used by object" +
                                     (users.size() > 1 ? "s " : " ") + list +
                                     "; destroy those first");
    }
    // One store frees the slot and, with it, its extent.
    store_release(s->state, slot_free);
    impl_->bump();
    return {};
}

result<snapshot> segment::read_all() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    snapshot snap;
    snap.generation = generation();
    std::vector<const slot *> live;
    for (uint32_t i = 0; i < impl_->max_objects(); i++) {
        const slot &s = impl_->slots()[i];
        if (s.state == slot_live) {
            live.push_back(&s);
        }
    }
    // Ids grow with creation, so id order is creation order (link order for hooks).
    std::sort(live.begin(), live.end(), [](const slot *a, const slot *b) { return a->id < b->id; });
    for (const slot *s : live) {
        switch (static_cast<object_kind>(s->kind)) {
        case object_kind::program:
            snap.programs.push_back(impl_->to_program(*s));
            break;
        case object_kind::map:
            snap.maps.push_back(impl_->to_map(*s));
            break;
        case object_kind::target:
            snap.targets.push_back(impl_->to_target(*s));
            break;
        case object_kind::link:
            snap.links.push_back(impl_->to_link(*s));
            break;
        }
    }
    return snap;
}

result<program_info> segment::program(uint32_t id) const {
    return impl_->read_object(id, object_kind::program,
                              [&](const slot &s) { return impl_->to_program(s); });
}

result<map_info> segment::map(uint32_t id) const {
    return impl_->read_object(id, object_kind::map,
                              [&](const slot &s) { return impl_->to_map(s); });
}

result<link_info> segment::link(uint32_t id) const {
    return impl_->read_object(id, object_kind::link,
                              [&](const slot &s) { return impl_->to_link(s); });
}

result<maps::map_view> segment::map_view(uint32_t id) const {
    struct where {
        void *storage;
        uint64_t size;
        maps::map_spec spec;
    };
    auto w = impl_->read_object(id, object_kind::map, [&](const slot &s) {
        return where{impl_->payload(s.extent), impl_->payload_size(s.extent),
                     impl_->to_map(s).spec};
    });
    if (!w) {
        return w.err();
    }
    auto view = maps::map_view::open(w->storage, w->size, w->spec);
    if (!view) {
        return make_error(view.err().code, "map " + std::to_string(id) + ": " + view.err().message);
    }
    return view;
}

result<link_counters> segment::counters(uint32_t link_id) const {
    return impl_->read_object(link_id, object_kind::link,
                              [](const slot &s) { return link_counters(const_cast<slot *>(&s)); });
}

void segment::lock_for_test() {
    pthread_mutex_lock(&impl_->hdr()->lock);
}

// --- link programs and per-host link states ---

namespace {

// A link's extent (links own none otherwise): what each host process reported about it.
struct host_record {
    int32_t pid; // 0: empty
    uint32_t failed;
    uint64_t stamp; // newer records have larger stamps
    char why[240];
};
struct host_records {
    uint64_t magic;
    uint64_t next_stamp;
    host_record rec[max_link_hosts];
};
constexpr uint64_t host_records_magic = 0x74736f686b6e696cull; // "linkhost"
static_assert(std::is_trivially_copyable_v<host_records> && sizeof(host_record) == 256);

bool process_exists(int32_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

} // namespace

result<void> segment::set_link_program(uint32_t link_id, uint32_t prog_id) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto l = impl_->find_kind(link_id, object_kind::link);
    if (!l) {
        return l.err();
    }
    if (auto p = impl_->find_kind(prog_id, object_kind::program); !p) {
        return p.err();
    }
    store_release((*l)->prog_id, prog_id);
    impl_->bump();
    return {};
}

namespace {

// The host records of a link slot, or null when it has none or they are not well formed.
host_records *records_of(const detail::heap &h, const header *hdr, const slot &s) {
    if (s.extent == 0 || s.extent < hdr->heap_offset ||
        s.extent + sizeof(extent_header) + sizeof(host_records) >
            hdr->heap_offset + hdr->heap_size ||
        h.payload_size(s.extent) < sizeof(host_records)) {
        return nullptr;
    }
    auto *r = static_cast<host_records *>(h.payload(s.extent));
    return r->magic == host_records_magic ? r : nullptr;
}

} // namespace

result<void> segment::set_link_host_state(uint32_t link_id, const link_host_state &state) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto l = impl_->find_kind(link_id, object_kind::link);
    if (!l) {
        return l.err();
    }
    slot &s = **l;
    host_records *r = records_of(impl_->objects(), impl_->hdr(), s);
    if (r == nullptr) {
        auto off = impl_->allocate(sizeof(host_records), s.id);
        if (!off) {
            return off.err();
        }
        r = static_cast<host_records *>(impl_->payload(*off));
        std::memset(static_cast<void *>(r), 0, sizeof *r);
        r->magic = host_records_magic;
        store_release(s.extent, *off);
    }
    host_record *pick = nullptr;
    for (host_record &rec : r->rec) {
        if (rec.pid == state.pid) {
            pick = &rec;
            break;
        }
    }
    for (host_record &rec : r->rec) {
        if (pick == nullptr && (rec.pid == 0 || !process_exists(rec.pid))) {
            pick = &rec;
        }
    }
    if (pick == nullptr) {
        pick = &*std::min_element(
            std::begin(r->rec), std::end(r->rec),
            [](const host_record &a, const host_record &b) { return a.stamp < b.stamp; });
    }
    pick->pid = state.pid;
    pick->failed = state.failed ? 1 : 0;
    pick->stamp = ++r->next_stamp;
    std::memset(pick->why, 0, sizeof pick->why);
    std::memcpy(pick->why, state.why.data(), std::min(state.why.size(), sizeof pick->why - 1));
    return {};
}

result<void> segment::clear_link_host_state(uint32_t link_id, int32_t pid) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto l = impl_->find_kind(link_id, object_kind::link);
    if (!l) {
        return l.err();
    }
    if (host_records *r = records_of(impl_->objects(), impl_->hdr(), **l)) {
        for (host_record &rec : r->rec) {
            if (rec.pid == pid) {
                rec.pid = 0;
            }
        }
    }
    return {};
}

result<std::map<uint32_t, std::vector<link_host_state>>> segment::link_host_states() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    std::map<uint32_t, std::vector<link_host_state>> out;
    for (uint32_t i = 0; i < impl_->max_objects(); i++) {
        const slot &s = impl_->slots()[i];
        if (s.state != slot_live || s.kind != static_cast<uint32_t>(object_kind::link)) {
            continue;
        }
        const host_records *r = records_of(impl_->objects(), impl_->hdr(), s);
        if (r == nullptr) {
            continue;
        }
        std::vector<const host_record *> recs;
        for (const host_record &rec : r->rec) {
            if (rec.pid != 0 && process_exists(rec.pid)) {
                recs.push_back(&rec);
            }
        }
        std::sort(recs.begin(), recs.end(),
                  [](const host_record *a, const host_record *b) { return a->pid < b->pid; });
        for (const host_record *rec : recs) {
            out[s.id].push_back({rec->pid, rec->failed != 0, read_name(rec->why, sizeof rec->why)});
        }
    }
    return out;
}

} // namespace bpftime::store
