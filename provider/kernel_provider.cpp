// SPDX-License-Identifier: MIT
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/provider/kernel_provider.hpp>

#include "kernel_objects.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>

namespace bpftime {

namespace {

using kernel::unique_fd;

constexpr uint32_t catalogue_version = 4;
constexpr uint32_t catalogue_entries = 4096;
constexpr size_t max_args = 4095;

// One object of the catalogue (the value of the meta map). Key 0 is the header.
struct record {
    uint32_t kind = 0; // store::object_kind; 0 in the header
    uint32_t type = 0; // program type, map type or attach type; the header: its version
    uint32_t next_id = 0;
    uint32_t prog_id = 0;                                                  // link
    uint32_t target_id = 0;                                                // link
    uint32_t enabled = 0;                                                  // link
    uint64_t cookie = 0;                                                   // link
    uint32_t read_only = 0;                                                // map
    uint32_t key_size = 0, value_size = 0, max_entries = 0, map_flags = 0; // map
    uint32_t nmaps = 0;                                                    // program
    uint32_t map_ids[store::max_program_maps] = {};
    char name[store::max_name + 1] = {};
    char section[store::max_name + 1] = {};
    char args[max_args + 1] = {}; // target
    uint64_t map_extra = 0;       // map
    // map: an array_of_maps' or hash_of_maps' inner template (maps::inner_map_template)
    uint32_t inner_type = 0, inner_key_size = 0, inner_value_size = 0, inner_max_entries = 0;
    uint32_t inner_flags = 0, pad = 0;
};

// A map's record as users see it.
store::map_info map_info_of(uint32_t id, const record &r) {
    store::map_info m;
    m.id = id;
    m.name = r.name;
    m.spec.type = static_cast<maps::map_type>(r.type);
    m.spec.key_size = r.key_size;
    m.spec.value_size = r.value_size;
    m.spec.max_entries = r.max_entries;
    m.spec.flags = r.map_flags;
    m.spec.map_extra = r.map_extra;
    m.spec.inner = {static_cast<maps::map_type>(r.inner_type), r.inner_key_size, r.inner_value_size,
                    r.inner_max_entries, r.inner_flags};
    m.read_only = r.read_only != 0;
    m.ncpus = static_cast<uint32_t>(std::max(libbpf_num_possible_cpus(), 1));
    return m;
}

void copy_text(char *dst, size_t cap, const std::string &src) {
    size_t n = std::min(src.size(), cap - 1);
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

store::object_kind kind_of(const record &r) {
    return static_cast<store::object_kind>(r.kind);
}

std::string prog_type_name(uint32_t type) {
    const char *s = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(type));
    return s != nullptr ? s : "type " + std::to_string(type);
}

// The program type an attach type needs.
uint32_t prog_type_for(int32_t attach_type) {
    switch (attach_type) {
    case attach_type_tracepoint:
        return BPF_PROG_TYPE_TRACEPOINT;
    case attach_type_fentry:
    case attach_type_fexit:
    case attach_type_tp_btf:
        return BPF_PROG_TYPE_TRACING;
    default:
        return BPF_PROG_TYPE_KPROBE;
    }
}

// The kernel's attach type of a BTF-typed tracing target (fentry, fexit, tp_btf), else 0.
bpf_attach_type tracing_attach_type(int32_t attach_type) {
    switch (attach_type) {
    case attach_type_fentry:
        return BPF_TRACE_FENTRY;
    case attach_type_fexit:
        return BPF_TRACE_FEXIT;
    case attach_type_tp_btf:
        return BPF_TRACE_RAW_TP;
    default:
        return static_cast<bpf_attach_type>(0);
    }
}

// What a tracing program's section says it was loaded for: the attach type name and the
// function or tracepoint ("fentry/do_unlinkat" -> fentry, do_unlinkat); the kernel checked the
// program against that function's BTF, so it attaches there and nowhere else.
std::pair<std::string, std::string> tracing_section(const std::string &section) {
    for (const char *kind : {"fentry", "fexit", "tp_btf"}) {
        for (const std::string &prefix : {std::string(kind) + "/", std::string(kind) + ".s/"}) {
            if (section.starts_with(prefix)) {
                return {kind, section.substr(prefix.size())};
            }
        }
    }
    return {};
}

// Whether program prog_id (its record prog) may run at a target of this attach type (and, for
// tracing targets, these arguments).
result<void> check_prog_type(uint32_t prog_id, const record &prog, int32_t attach_type,
                             const std::string &args) {
    if (prog.type == prog_type_for(attach_type) && tracing_attach_type(attach_type) != 0) {
        auto [kind, where] = tracing_section(prog.section);
        if (kind == attach_type_name(attach_type) && where == args) {
            return {};
        }
        return make_error(
            EINVAL,
            "program " + std::to_string(prog_id) + " (" + prog.name + ") was loaded for " +
                (kind.empty() ? std::string("section ") + prog.section : kind + " " + where) +
                "; the kernel attaches it only there, not at " + attach_type_name(attach_type) +
                " " + args);
    }
    if (prog.type == prog_type_for(attach_type)) {
        return {};
    }
    return make_error(EINVAL, "program " + std::to_string(prog_id) + " (" + prog.name + ") is a " +
                                  prog_type_name(prog.type) + " program; " +
                                  attach_type_name(attach_type) + " targets take " +
                                  prog_type_name(prog_type_for(attach_type)) + " programs");
}

// Kernel object names: at most 15 characters of [A-Za-z0-9_.].
std::string kernel_name(const std::string &name) {
    std::string out;
    for (char c : name) {
        if (out.size() == BPF_OBJ_NAME_LEN - 1) {
            break;
        }
        bool ok = std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.';
        out += ok ? c : '_';
    }
    return out;
}

result<void> ensure_bpffs() {
    struct statfs st {};
    if (::statfs(bpffs_root, &st) == 0 && st.f_type == BPF_FS_MAGIC) {
        return {};
    }
    if (::mount("bpf", bpffs_root, "bpf", 0, "mode=0700") != 0) {
        int e = errno;
        return make_error(e, std::string("bpffs is not mounted at ") + bpffs_root +
                                 " and mounting it failed: " + std::strerror(e));
    }
    return {};
}

// The folder's lock: flock() on the folder itself.
class folder_lock {
public:
    folder_lock(int fd, bool exclusive) : fd_(fd) {
        while (::flock(fd_, exclusive ? LOCK_EX : LOCK_SH) != 0 && errno == EINTR) {
        }
    }
    ~folder_lock() { ::flock(fd_, LOCK_UN); }
    folder_lock(const folder_lock &) = delete;
    folder_lock &operator=(const folder_lock &) = delete;

private:
    int fd_;
};

} // namespace

struct kernel_event_provider::impl {
    std::string folder;
    unique_fd dir;
    unique_fd meta;

    std::string pin_path(const char *prefix, uint32_t id) const {
        return folder + "/" + prefix + "_" + std::to_string(id);
    }

    result<record> get(uint32_t id) const {
        auto r = std::make_unique<record>();
        if (id == 0 || bpf_map_lookup_elem(meta.get(), &id, r.get()) != 0) {
            return make_error(ENOENT, "no object with id " + std::to_string(id));
        }
        return *r;
    }

    result<record> get_kind(uint32_t id, store::object_kind kind) const {
        auto r = get(id);
        if (r && kind_of(*r) != kind) {
            return make_error(EINVAL, "object " + std::to_string(id) + " is a " +
                                          store::kind_name(kind_of(*r)) + ", not a " +
                                          store::kind_name(kind));
        }
        return r;
    }

    result<void> put(uint32_t id, const record &r) const {
        if (bpf_map_update_elem(meta.get(), &id, &r, BPF_ANY) != 0) {
            int e = errno;
            return make_error(
                e == E2BIG ? ENOSPC : e,
                e == E2BIG ? folder + " is full: all " + std::to_string(catalogue_entries - 1) +
                                 " objects are in use"
                           : folder + ": cannot write the catalogue: " + std::strerror(e));
        }
        return {};
    }

    // The catalogue's header (key 0), or null when it has none.
    std::unique_ptr<record> header() const {
        auto head = std::make_unique<record>();
        uint32_t zero = 0;
        return bpf_map_lookup_elem(meta.get(), &zero, head.get()) == 0 ? std::move(head) : nullptr;
    }

    // Records a new object under the next id (with the exclusive lock held). pin_it, when
    // given, first pins its kernel object as PREFIX_ID; if the record cannot be written, that
    // pin goes again.
    result<uint32_t> add(const record &r, const char *prefix,
                         const std::function<result<void>(uint32_t id)> &pin_it) const {
        auto head = header();
        if (head == nullptr) {
            return make_error(EPROTO, folder + ": the catalogue has no header");
        }
        uint32_t id = head->next_id++;
        if (auto written = put(0, *head); !written) {
            return written.err();
        }
        if (pin_it) {
            if (auto pinned = pin_it(id); !pinned) {
                return pinned.err();
            }
        }
        if (auto written = put(id, r); !written) {
            if (prefix != nullptr) {
                unpin(prefix, id);
            }
            return written.err();
        }
        return id;
    }

    // Every object, by id.
    // The bpftime id of the map the kernel knows by kernel_id, 0 when it is none of ours.
    uint32_t map_of_kernel_id(uint32_t kernel_id) const {
        return object_of_kernel_id(store::object_kind::map, "map", kernel_id);
    }
    // The bpftime id of the program the kernel knows by kernel_id, 0 when it is none of ours.
    uint32_t prog_of_kernel_id(uint32_t kernel_id) const {
        return object_of_kernel_id(store::object_kind::program, "prog", kernel_id);
    }
    uint32_t object_of_kernel_id(store::object_kind kind, const char *prefix,
                                 uint32_t kernel_id) const {
        for (const auto &[id, r] : all()) {
            if (kind_of(r) != kind) {
                continue;
            }
            if (auto fd = pinned(prefix, id); fd && kernel::object_id(fd->get()) == kernel_id) {
                return id;
            }
        }
        return 0;
    }

    // The outer maps that hold map id (their entries name its kernel map), by bpftime id,
    // with the key of each entry.
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> holders(uint32_t id) const {
        std::vector<std::pair<uint32_t, std::vector<uint8_t>>> out;
        auto fd = pinned("map", id);
        if (!fd) {
            return out;
        }
        uint32_t kernel_id = kernel::object_id(fd->get());
        for (const auto &[outer, r] : all()) {
            if (kind_of(r) != store::object_kind::map ||
                !maps::is_map_in_map(static_cast<maps::map_type>(r.type))) {
                continue;
            }
            auto ofd = pinned("map", outer);
            if (!ofd) {
                continue;
            }
            std::vector<uint8_t> key(r.key_size), next(r.key_size);
            bool first = true;
            for (uint32_t n = 0;
                 n <= r.max_entries &&
                 bpf_map_get_next_key(ofd->get(), first ? nullptr : key.data(), next.data()) == 0;
                 n++) {
                first = false;
                key.swap(next);
                uint32_t held = 0;
                if (bpf_map_lookup_elem(ofd->get(), key.data(), &held) == 0 && held == kernel_id) {
                    out.emplace_back(outer, key);
                }
            }
        }
        return out;
    }

    std::vector<std::pair<uint32_t, record>> all() const {
        std::vector<std::pair<uint32_t, record>> out;
        uint32_t key = 0, next = 0;
        bool first = true;
        auto r = std::make_unique<record>();
        while (bpf_map_get_next_key(meta.get(), first ? nullptr : &key, &next) == 0) {
            first = false;
            key = next;
            if (next != 0 && bpf_map_lookup_elem(meta.get(), &next, r.get()) == 0) {
                out.emplace_back(next, *r);
            }
        }
        std::sort(out.begin(), out.end(),
                  [](const auto &a, const auto &b) { return a.first < b.first; });
        return out;
    }

    result<unique_fd> pinned(const char *prefix, uint32_t id) const {
        std::string path = pin_path(prefix, id);
        unique_fd fd(bpf_obj_get(path.c_str()));
        if (!fd) {
            int e = errno;
            return make_error(e, path + ": " + std::strerror(e));
        }
        return fd;
    }

    result<void> pin(int fd, const char *prefix, uint32_t id) const {
        std::string path = pin_path(prefix, id);
        if (bpf_obj_pin(fd, path.c_str()) != 0) {
            int e = errno;
            return make_error(e, "cannot pin " + path + ": " + std::strerror(e));
        }
        return {};
    }

    bool is_pinned(const char *prefix, uint32_t id) const {
        return ::access(pin_path(prefix, id).c_str(), F_OK) == 0;
    }

    void unpin(const char *prefix, uint32_t id) const {
        (void)::unlink(pin_path(prefix, id).c_str());
    }

    // Detaches a kernel link before returning. Dropping the pin alone releases the link later,
    // from a kernel work queue (probes fired for milliseconds after); closing the last file
    // descriptor releases it on the way out of close().
    void detach(uint32_t link_id) const {
        unique_fd last(bpf_obj_get(pin_path("link", link_id).c_str()));
        unpin("link", link_id);
    }

    // Attaches a link's program at its target in the kernel and pins the kernel link.
    result<void> attach(uint32_t link_id, const record &link) const {
        auto target = get_kind(link.target_id, store::object_kind::target);
        if (!target) {
            return target.err();
        }
        auto prog = pinned("prog", link.prog_id);
        if (!prog) {
            return prog.err();
        }
        auto where = "link " + std::to_string(link_id) + ": program " +
                     std::to_string(link.prog_id) + " at " +
                     attach_type_name(static_cast<int32_t>(target->type)) + " " + target->args;
        if (bpf_attach_type t = tracing_attach_type(static_cast<int32_t>(target->type)); t != 0) {
            // The program carries its target (its BTF id); the link names only the type.
            LIBBPF_OPTS(bpf_link_create_opts, opts);
            opts.tracing.cookie = link.cookie;
            unique_fd kl(bpf_link_create(prog->get(), 0, t, &opts));
            if (!kl) {
                int e = errno;
                return make_error(e,
                                  where + ": the kernel would not attach it: " + std::strerror(e));
            }
            return pin(kl.get(), "link", link_id);
        }
        auto event = kernel::open_perf_event(static_cast<int32_t>(target->type), target->args);
        if (!event) {
            return make_error(event.err().code, where + ": " + event.err().message);
        }
        LIBBPF_OPTS(bpf_link_create_opts, opts);
        opts.perf_event.bpf_cookie = link.cookie;
        unique_fd kl(bpf_link_create(prog->get(), event->get(), BPF_PERF_EVENT, &opts));
        if (!kl) {
            int e = errno;
            return make_error(e, where + ": the kernel would not attach it: " + std::strerror(e));
        }
        return pin(kl.get(), "link", link_id);
    }

    // Objects that use id (links of programs and targets, programs of maps).
    std::vector<uint32_t> dependents(uint32_t id) const {
        std::vector<uint32_t> out;
        for (const auto &[other, r] : all()) {
            bool uses = false;
            if (kind_of(r) == store::object_kind::link) {
                uses = r.prog_id == id || r.target_id == id;
            } else if (kind_of(r) == store::object_kind::program) {
                uses = std::find(r.map_ids, r.map_ids + r.nmaps, id) != r.map_ids + r.nmaps;
            }
            if (uses) {
                out.push_back(other);
            }
        }
        return out;
    }

    folder_lock lock(bool exclusive) const { return folder_lock(dir.get(), exclusive); }
};

kernel_event_provider::~kernel_event_provider() = default;

std::shared_ptr<void> kernel_event_provider::exclusive_lock() const {
    return std::make_shared<folder_lock>(impl_->dir.get(), true);
}

result<std::string> kernel_event_provider::folder_of(const std::string &name) {
    std::string n = name;
    while (!n.empty() && n.front() == '/') {
        n.erase(n.begin());
    }
    if (n.empty() || n == "." || n == ".." || n.find('/') != std::string::npos) {
        return make_error(EINVAL, "segment name '" + name + "' cannot name a folder in bpffs");
    }
    return std::string(bpffs_root) + "/" + n;
}

result<void> kernel_event_provider::available() {
    return kernel::probe_bpf();
}

result<std::unique_ptr<kernel_event_provider>> kernel_event_provider::open(const std::string &name,
                                                                           bool create) {
    auto folder = folder_of(name);
    if (!folder) {
        return folder.err();
    }
    if (auto r = ensure_bpffs(); !r) {
        return r.err();
    }
    if (create && ::mkdir(folder->c_str(), 0700) != 0 && errno != EEXIST) {
        int e = errno;
        return make_error(e, "cannot create " + *folder + ": " + std::strerror(e));
    }
    std::unique_ptr<kernel_event_provider> p(new kernel_event_provider());
    p->impl_ = std::make_unique<impl>();
    p->folder_ = *folder;
    impl &m = *p->impl_;
    m.folder = *folder;
    m.dir = unique_fd(::open(folder->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!m.dir) {
        int e = errno;
        if (e == ENOENT) {
            return make_error(ENOENT, "no kernel objects for segment " + name + ": " + *folder +
                                          " does not exist");
        }
        return make_error(e, *folder + ": " + std::strerror(e));
    }
    folder_lock lock(m.dir.get(), create);
    std::string meta_path = *folder + "/meta";
    m.meta = unique_fd(bpf_obj_get(meta_path.c_str()));
    if (!m.meta && errno == ENOENT && create) {
        LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
        m.meta = unique_fd(bpf_map_create(BPF_MAP_TYPE_HASH, "bpftime_meta", sizeof(uint32_t),
                                          sizeof(record), catalogue_entries, &opts));
        if (!m.meta) {
            int e = errno;
            return make_error(e, *folder +
                                     ": cannot create the catalogue map: " + std::strerror(e) +
                                     (e == EPERM ? " (needs root with CAP_BPF)" : ""));
        }
        auto head = std::make_unique<record>();
        head->type = catalogue_version;
        head->next_id = 1;
        copy_text(head->name, sizeof head->name, "bpftime");
        if (auto r = m.put(0, *head); !r) {
            return r.err();
        }
        if (bpf_obj_pin(m.meta.get(), meta_path.c_str()) != 0) {
            int e = errno;
            return make_error(e, "cannot pin " + meta_path + ": " + std::strerror(e));
        }
    } else if (!m.meta) {
        int e = errno;
        return make_error(e == ENOENT ? EPROTO : e,
                          e == ENOENT ? *folder + " is not a bpftime folder (it has no meta map)"
                                      : meta_path + ": " + std::strerror(e));
    }
    bpf_map_info info{};
    uint32_t len = sizeof info;
    std::unique_ptr<record> head;
    if (bpf_obj_get_info_by_fd(m.meta.get(), &info, &len) != 0 || info.type != BPF_MAP_TYPE_HASH ||
        info.key_size != sizeof(uint32_t) || info.value_size != sizeof(record) ||
        (head = m.header()) == nullptr || head->type != catalogue_version ||
        std::strcmp(head->name, "bpftime") != 0) {
        return make_error(EPROTO, *folder + " holds a catalogue of another layout or program");
    }
    return p;
}

result<void> kernel_event_provider::remove(const std::string &name) {
    auto folder = folder_of(name);
    if (!folder) {
        return folder.err();
    }
    if (auto r = ensure_bpffs(); !r) {
        return r.err();
    }
    unique_fd dir(::open(folder->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) {
        int e = errno;
        return make_error(e, e == ENOENT ? "no kernel objects for segment " + name + ": " +
                                               *folder + " does not exist"
                                         : *folder + ": " + std::strerror(e));
    }
    folder_lock lock(dir.get(), true);
    std::vector<std::string> entries;
    if (DIR *d = ::fdopendir(::dup(dir.get())); d != nullptr) {
        while (dirent *ent = ::readdir(d)) {
            std::string n = ent->d_name;
            if (n != "." && n != "..") {
                entries.push_back(n);
            }
        }
        ::closedir(d);
    }
    auto ours = [](const std::string &n) {
        return n == "meta" || n.rfind("prog_", 0) == 0 || n.rfind("map_", 0) == 0 ||
               n.rfind("link_", 0) == 0;
    };
    for (const std::string &n : entries) {
        if (!ours(n)) {
            return make_error(EPROTO, *folder + " holds " + n +
                                          ", which bpftime did not create; nothing was removed");
        }
    }
    // Links first (they detach), then programs, then the maps they used, then the catalogue.
    for (const char *prefix : {"link_", "prog_", "map_", "meta"}) {
        for (const std::string &n : entries) {
            if (n.rfind(prefix, 0) == 0) {
                // A link's last descriptor, closed after its pin goes, detaches it at once.
                unique_fd last(
                    std::string(prefix) == "link_" ? bpf_obj_get((*folder + "/" + n).c_str()) : -1);
                (void)::unlinkat(dir.get(), n.c_str(), 0);
            }
        }
    }
    if (::rmdir(folder->c_str()) != 0) {
        int e = errno;
        return make_error(e, "cannot remove " + *folder + ": " + std::strerror(e));
    }
    return {};
}

result<uint32_t> kernel_event_provider::create_program(const program_spec &spec) {
    std::string what = "program " + spec.name;
    if (spec.type == BPF_PROG_TYPE_UNSPEC) {
        return make_error(EINVAL, what +
                                      " has no program type; the kernel needs one (build it in a "
                                      "section such as uprobe/..., uretprobe/... or "
                                      "tracepoint/CATEGORY/NAME)");
    }
    if (spec.insns.empty()) {
        return make_error(EINVAL, "a program needs at least one instruction");
    }
    if (spec.map_ids.size() > store::max_program_maps) {
        return make_error(E2BIG, "a program may use at most " +
                                     std::to_string(store::max_program_maps) + " maps");
    }
    if (auto ok = kernel::check_override_return(what, spec.section, spec.insns); !ok) {
        return ok.err();
    }
    auto lock = impl_->lock(true);
    // Map references name bpftime ids; the kernel takes file descriptors.
    std::vector<vm::ebpf_inst> insns = spec.insns;
    std::vector<unique_fd> map_fds;
    for (size_t pc = 0; pc + 1 < insns.size(); pc++) {
        vm::ebpf_inst &inst = insns[pc];
        if (inst.opcode != vm::op_lddw) {
            continue;
        }
        if (inst.src == vm::pseudo_map_fd || inst.src == vm::pseudo_map_value) {
            auto id = static_cast<uint32_t>(inst.imm);
            if (std::find(spec.map_ids.begin(), spec.map_ids.end(), id) == spec.map_ids.end()) {
                return make_error(EINVAL, what + ": instruction " + std::to_string(pc) +
                                              " names map " + std::to_string(id) +
                                              ", which is not in its map list");
            }
            if (auto m = impl_->get_kind(id, store::object_kind::map); !m) {
                return make_error(m.err().code, what + ": the program refers to map " +
                                                    std::to_string(id) + ": " + m.err().message);
            }
            auto fd = impl_->pinned("map", id);
            if (!fd) {
                return fd.err();
            }
            inst.imm = fd->get();
            map_fds.push_back(std::move(*fd));
        }
        pc++;
    }
    auto fd = kernel::load_program(spec.type, kernel_name(spec.name), insns);
    if (!fd) {
        return make_error(fd.err().code, what + ": " + fd.err().message);
    }
    return adopt_program(spec, fd->get());
}

result<uint32_t> kernel_event_provider::adopt_program(const program_spec &spec, int fd) {
    auto r = std::make_unique<record>();
    r->kind = static_cast<uint32_t>(store::object_kind::program);
    r->type = spec.type;
    copy_text(r->name, sizeof r->name, spec.name);
    copy_text(r->section, sizeof r->section, spec.section);
    r->nmaps = static_cast<uint32_t>(spec.map_ids.size());
    std::copy(spec.map_ids.begin(), spec.map_ids.end(), r->map_ids);
    return impl_->add(*r, "prog", [&](uint32_t id) { return impl_->pin(fd, "prog", id); });
}

result<uint32_t> kernel_event_provider::create_map(const map_create_spec &spec) {
    const maps::map_spec &s = spec.spec;
    std::string what = "map " + spec.name;
    // The spec's flags (BPF_F_NO_PREALLOC, which LPM tries need, BPF_F_MMAPABLE, ...) and
    // map_extra (a bloom filter's hash count) go to the kernel as they are.
    LIBBPF_OPTS(bpf_map_create_opts, opts,
                .map_flags =
                    s.flags | (spec.read_only ? static_cast<uint32_t>(BPF_F_RDONLY_PROG) : 0u),
                .map_extra = s.map_extra);
    // An outer map takes its template from a map of that spec, as BPF_MAP_CREATE's
    // inner_map_fd; the kernel keeps only the template, so the map goes after the call.
    unique_fd inner_template;
    if (maps::is_map_in_map(s.type)) {
        if (auto ok = maps::validate_spec(s); !ok) {
            return make_error(EINVAL, what + ": " + ok.err().message);
        }
        const maps::inner_map_template &t = s.inner;
        LIBBPF_OPTS(bpf_map_create_opts, inner_opts, .map_flags = t.flags);
        inner_template =
            unique_fd(bpf_map_create(static_cast<bpf_map_type>(t.type), "bpftime_inner", t.key_size,
                                     t.value_size, t.max_entries, &inner_opts));
        if (!inner_template) {
            int e = errno;
            return make_error(e, what + ": the kernel refused its inner map template (" +
                                     maps::map_type_name(t.type) + "): " + std::strerror(e));
        }
        opts.inner_map_fd = static_cast<uint32_t>(inner_template.get());
    }
    unique_fd fd(bpf_map_create(static_cast<bpf_map_type>(s.type), kernel_name(spec.name).c_str(),
                                s.key_size, s.value_size, s.max_entries, &opts));
    if (!fd) {
        int e = errno;
        return make_error(e, what + ": the kernel refused it (" + maps::map_type_name(s.type) +
                                 " key " + std::to_string(s.key_size) + " value " +
                                 std::to_string(s.value_size) + " max_entries " +
                                 std::to_string(s.max_entries) + "): " + std::strerror(e));
    }
    if (!spec.initial_value.empty()) {
        if (spec.initial_value.size() != s.value_size) {
            return make_error(EINVAL, what + ": the initial value has " +
                                          std::to_string(spec.initial_value.size()) +
                                          " bytes; the value size is " +
                                          std::to_string(s.value_size));
        }
        uint32_t zero = 0;
        if (bpf_map_update_elem(fd.get(), &zero, spec.initial_value.data(), BPF_ANY) != 0) {
            int e = errno;
            return make_error(e, what + ": cannot set its initial value: " + std::strerror(e));
        }
    }
    if (spec.read_only && bpf_map_freeze(fd.get()) != 0) {
        int e = errno;
        return make_error(e, what + ": cannot freeze it: " + std::strerror(e));
    }
    auto lock = impl_->lock(true);
    return adopt_map(spec, fd.get());
}

result<uint32_t> kernel_event_provider::adopt_map(const map_create_spec &spec, int fd) {
    const maps::map_spec &s = spec.spec;
    auto r = std::make_unique<record>();
    r->kind = static_cast<uint32_t>(store::object_kind::map);
    r->type = static_cast<uint32_t>(s.type);
    copy_text(r->name, sizeof r->name, spec.name);
    r->key_size = s.key_size;
    r->value_size = s.value_size;
    r->max_entries = s.max_entries;
    r->map_flags = static_cast<uint32_t>(s.flags);
    r->map_extra = s.map_extra;
    r->inner_type = static_cast<uint32_t>(s.inner.type);
    r->inner_key_size = s.inner.key_size;
    r->inner_value_size = s.inner.value_size;
    r->inner_max_entries = s.inner.max_entries;
    r->inner_flags = s.inner.flags;
    r->read_only = spec.read_only ? 1 : 0;
    return impl_->add(*r, "map", [&](uint32_t id) { return impl_->pin(fd, "map", id); });
}

result<uint32_t> kernel_event_provider::create_attach_target(int32_t attach_type,
                                                             const std::string &args) {
    auto type = find_attach_type(attach_type);
    if (!type) {
        return type.err();
    }
    if (!type->kernel) {
        std::string kinds;
        for (const attach_type_info &t : attach_types()) {
            if (t.kernel) {
                kinds += (kinds.empty() ? "" : ", ") + t.name;
            }
        }
        return make_error(EOPNOTSUPP, "attach type " + type->name +
                                          " has no counterpart in the kernel (the kernel "
                                          "provider attaches " +
                                          kinds + "); the user-space provider attaches it");
    }
    if (args.size() > max_args) {
        return make_error(E2BIG, "attach target arguments are longer than " +
                                     std::to_string(max_args) + " bytes");
    }
    if (auto ok = check_target_args(attach_type, args); !ok) {
        return ok.err();
    }
    auto r = std::make_unique<record>();
    r->kind = static_cast<uint32_t>(store::object_kind::target);
    r->type = static_cast<uint32_t>(attach_type);
    copy_text(r->name, sizeof r->name, type->name);
    copy_text(r->args, sizeof r->args, args);
    auto lock = impl_->lock(true);
    return impl_->add(*r, nullptr, {});
}

result<uint32_t> kernel_event_provider::attach_program(uint32_t prog_id, uint32_t target_id,
                                                       uint64_t cookie) {
    auto lock = impl_->lock(true);
    auto prog = impl_->get_kind(prog_id, store::object_kind::program);
    if (!prog) {
        return prog.err();
    }
    auto target = impl_->get_kind(target_id, store::object_kind::target);
    if (!target) {
        return target.err();
    }
    if (auto ok = check_prog_type(prog_id, *prog, static_cast<int32_t>(target->type), target->args);
        !ok) {
        return ok.err();
    }
    auto r = std::make_unique<record>();
    r->kind = static_cast<uint32_t>(store::object_kind::link);
    copy_text(r->name, sizeof r->name, "link");
    r->prog_id = prog_id;
    r->target_id = target_id;
    r->enabled = 1;
    r->cookie = cookie;
    return impl_->add(*r, "link", [&](uint32_t id) { return impl_->attach(id, *r); });
}

result<void> kernel_event_provider::enable_link(uint32_t link_id) {
    auto lock = impl_->lock(true);
    auto r = impl_->get_kind(link_id, store::object_kind::link);
    if (!r) {
        return r.err();
    }
    if (!impl_->is_pinned("link", link_id)) {
        if (auto a = impl_->attach(link_id, *r); !a) {
            return a;
        }
    }
    r->enabled = 1;
    return impl_->put(link_id, *r);
}

result<void> kernel_event_provider::update_link(uint32_t link_id, uint32_t prog_id) {
    auto lock = impl_->lock(true);
    auto r = impl_->get_kind(link_id, store::object_kind::link);
    if (!r) {
        return r.err();
    }
    auto prog = impl_->get_kind(prog_id, store::object_kind::program);
    if (!prog) {
        return prog.err();
    }
    auto target = impl_->get_kind(r->target_id, store::object_kind::target);
    if (!target) {
        return target.err();
    }
    if (auto ok = check_prog_type(prog_id, *prog, static_cast<int32_t>(target->type), target->args);
        !ok) {
        return ok.err();
    }
    record next = *r;
    next.prog_id = prog_id;
    if (impl_->is_pinned("link", link_id)) {
        auto kl = impl_->pinned("link", link_id);
        if (!kl) {
            return kl.err();
        }
        auto pf = impl_->pinned("prog", prog_id);
        if (!pf) {
            return pf.err();
        }
        if (bpf_link_update(kl->get(), pf->get(), nullptr) != 0) {
            int e = errno;
            if (e != EINVAL && e != EOPNOTSUPP) {
                return make_error(e, "link " + std::to_string(link_id) +
                                         ": the kernel would not update it: " + std::strerror(e));
            }
            // kl keeps the old kernel link attached until the new one is pinned.
            impl_->unpin("link", link_id);
            if (auto a = impl_->attach(link_id, next); !a) {
                (void)impl_->pin(kl->get(), "link", link_id);
                return a;
            }
        }
    }
    return impl_->put(link_id, next);
}

result<void> kernel_event_provider::disable_link(uint32_t link_id) {
    auto lock = impl_->lock(true);
    auto r = impl_->get_kind(link_id, store::object_kind::link);
    if (!r) {
        return r.err();
    }
    impl_->detach(link_id);
    r->enabled = 0;
    return impl_->put(link_id, *r);
}

result<void> kernel_event_provider::destroy_object(uint32_t id) {
    auto lock = impl_->lock(true);
    auto r = impl_->get(id);
    if (!r) {
        return r.err();
    }
    if (auto users = impl_->dependents(id); !users.empty()) {
        std::string list;
        for (uint32_t u : users) {
            list += (list.empty() ? "" : ", ") + std::to_string(u);
        }
        return make_error(EBUSY, std::string(store::kind_name(kind_of(*r))) + " " +
                                     std::to_string(id) + " is used by object" +
                                     (users.size() > 1 ? "s " : " ") + list +
                                     "; destroy those first");
    }
    // As the store: a map an outer map holds stays until its entries go (the kernel would keep
    // it alive, unreachable by id).
    if (kind_of(*r) == store::object_kind::map) {
        if (auto held = impl_->holders(id); !held.empty()) {
            const auto &[outer, key] = held.front();
            std::string at;
            if (key.size() == sizeof(uint32_t)) {
                uint32_t index = 0;
                std::memcpy(&index, key.data(), sizeof index);
                at = std::to_string(index);
            } else {
                at = "0x";
                for (uint8_t b : key) {
                    char buf[3];
                    std::snprintf(buf, sizeof buf, "%02x", b);
                    at += buf;
                }
            }
            return make_error(
                EBUSY,
                "map " + std::to_string(id) + " is an inner map of map " + std::to_string(outer) +
                    " (key " + at +
                    (held.size() > 1 ? " and " + std::to_string(held.size() - 1) + " more entries"
                                     : std::string()) +
                    "); delete those entries or destroy map " + std::to_string(outer) + " first");
        }
    }
    switch (kind_of(*r)) {
    case store::object_kind::link:
        impl_->detach(id);
        break;
    case store::object_kind::program:
        impl_->unpin("prog", id);
        break;
    case store::object_kind::map:
        impl_->unpin("map", id);
        break;
    case store::object_kind::target:
        break;
    }
    if (bpf_map_delete_elem(impl_->meta.get(), &id) != 0) {
        int e = errno;
        return make_error(e, folder_ + ": cannot update the catalogue: " + std::strerror(e));
    }
    return {};
}

result<listing> kernel_event_provider::list() const {
    auto lock = impl_->lock(false);
    listing out;
    out.kernel_stats = kernel::stats_enabled();
    out.counted = out.kernel_stats;
    out.run_timing = out.kernel_stats;
    std::map<uint32_t, std::pair<uint64_t, uint64_t>> prog_counts; // id -> run_cnt, run_time_ns
    store::snapshot &snap = out.objects;
    if (auto head = impl_->header()) {
        snap.generation = head->next_id;
    }
    for (const auto &[id, r] : impl_->all()) {
        switch (kind_of(r)) {
        case store::object_kind::program: {
            store::program_info p;
            p.id = id;
            p.name = r.name;
            p.type = r.type;
            p.section = r.section;
            p.map_ids.assign(r.map_ids, r.map_ids + r.nmaps);
            if (auto fd = impl_->pinned("prog", id)) {
                auto k = kernel::program_of(fd->get());
                if (k.id != 0) {
                    out.kernel_ids[id] = k.id;
                }
                p.insns = std::move(k.insns);
                prog_counts[id] = {k.run_cnt, k.run_time_ns};
            }
            snap.programs.push_back(std::move(p));
            break;
        }
        case store::object_kind::map: {
            if (auto fd = impl_->pinned("map", id)) {
                if (uint32_t k = kernel::object_id(fd->get()); k != 0) {
                    out.kernel_ids[id] = k;
                }
            }
            snap.maps.push_back(map_info_of(id, r));
            break;
        }
        case store::object_kind::target:
            snap.targets.push_back({id, r.name, static_cast<int32_t>(r.type), r.args});
            break;
        case store::object_kind::link: {
            store::link_info l;
            l.id = id;
            l.name = r.name;
            l.prog_id = r.prog_id;
            l.target_id = r.target_id;
            l.enabled = r.enabled != 0;
            l.cookie = r.cookie;
            if (auto fd = impl_->pinned("link", id)) {
                if (uint32_t k = kernel::object_id(fd->get()); k != 0) {
                    out.kernel_ids[id] = k;
                }
            }
            snap.links.push_back(std::move(l));
            break;
        }
        }
    }
    // Programs come before their links in id order, so every link's program was read above.
    for (store::link_info &l : snap.links) {
        if (auto c = prog_counts.find(l.prog_id); c != prog_counts.end() && out.kernel_stats) {
            l.runs = c->second.first;
            l.run_time_ns = c->second.second;
        }
    }
    return out;
}

result<std::unique_ptr<map_access>> kernel_event_provider::open_map(uint32_t id) const {
    auto lock = impl_->lock(false);
    auto snap_map = impl_->get_kind(id, store::object_kind::map);
    if (!snap_map) {
        return snap_map.err();
    }
    auto fd = impl_->pinned("map", id);
    if (!fd) {
        return fd.err();
    }
    store::map_info info = map_info_of(id, *snap_map);
    if (info.spec.type == maps::map_type::prog_array) {
        // Values are bpftime program ids, as in user space: an update gives the kernel the
        // pinned program's fd (the kernel checks its type against the array's callers), a
        // lookup turns the kernel's program id back into the bpftime id.
        kernel::inner_maps progs;
        progs.fd_of = [this, array = info](uint32_t prog_id) -> result<unique_fd> {
            auto held = impl_->lock(false);
            auto r = impl_->get_kind(prog_id, store::object_kind::program);
            if (!r) {
                return make_error(EINVAL, "map " + std::to_string(array.id) +
                                              " is a prog_array: its values are program ids, "
                                              "and " +
                                              std::to_string(prog_id) + " is not one (" +
                                              r.err().message + ")");
            }
            return impl_->pinned("prog", prog_id);
        };
        progs.id_of = [this](uint32_t kernel_id) -> uint32_t {
            auto held = impl_->lock(false);
            return impl_->prog_of_kernel_id(kernel_id);
        };
        return kernel::make_map_access(std::move(info), std::move(*fd), std::move(progs));
    }
    if (!maps::is_map_in_map(info.spec.type)) {
        return kernel::make_map_access(std::move(info), std::move(*fd));
    }
    // Values of outer maps are bpftime map ids: an update gives the kernel the pinned map's fd,
    // checked against the template first so the refusal says what differs; a lookup turns the
    // kernel's inner map id back into the bpftime id.
    kernel::inner_maps inner;
    inner.fd_of = [this, outer = info](uint32_t inner_id) -> result<unique_fd> {
        auto held = impl_->lock(false);
        auto refused = [&](int code, const std::string &why) {
            return make_error(code, "map " + std::to_string(inner_id) + " cannot be put into map " +
                                        std::to_string(outer.id) + " (" + outer.name + "): " + why);
        };
        if (inner_id == outer.id) {
            return refused(EINVAL, "a map cannot hold itself");
        }
        auto r = impl_->get_kind(inner_id, store::object_kind::map);
        if (!r) {
            return refused(r.err().code, r.err().message);
        }
        if (auto ok = maps::check_inner_map(outer.spec, map_info_of(inner_id, *r).spec); !ok) {
            return refused(EINVAL, ok.err().message);
        }
        return impl_->pinned("map", inner_id);
    };
    inner.id_of = [this](uint32_t kernel_id) -> uint32_t {
        auto held = impl_->lock(false);
        return impl_->map_of_kernel_id(kernel_id);
    };
    return kernel::make_map_access(std::move(info), std::move(*fd), std::move(inner));
}

result<void> kernel_event_provider::instantiate() {
    auto lock = impl_->lock(true);
    result<void> first_error;
    for (const auto &[id, r] : impl_->all()) {
        if (kind_of(r) == store::object_kind::link && r.enabled != 0 &&
            !impl_->is_pinned("link", id)) {
            if (auto a = impl_->attach(id, r); !a && first_error) {
                first_error = std::move(a);
            }
        }
    }
    return first_error;
}

void kernel_event_provider::deinstantiate() {
    auto lock = impl_->lock(true);
    for (const auto &[id, r] : impl_->all()) {
        if (kind_of(r) == store::object_kind::link) {
            impl_->detach(id);
        }
    }
}

} // namespace bpftime
