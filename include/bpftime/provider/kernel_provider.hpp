// SPDX-License-Identifier: MIT
/// @file
/// kernel_event_provider: base_event_provider on the kernel's own eBPF, through libbpf and the
/// bpf() system call. Objects are kernel objects pinned in bpffs, so they outlive the process
/// that created them.
#pragma once

#include <bpftime/provider/event_provider.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bpftime {

/// Where bpffs is mounted (and mounted when it is not).
inline constexpr const char *bpffs_root = "/sys/fs/bpf";

/// The kernel provider. The objects of a segment name live in the bpffs folder
/// /sys/fs/bpf/NAME:
///   meta       a pinned hash map: object id -> record (kind, name, types, link ends, target
///              arguments, enabled flag), plus the next id; the folder's catalogue
///   prog_ID    pinned programs
///   map_ID     pinned maps
///   link_ID    pinned kernel links of enabled links (removing the pin detaches the link)
/// Writers take an exclusive flock() on the folder, readers a shared one, so several
/// processes may use one folder at once. Ids are bpftime's own, never reused in a folder.
///
/// Semantics match event_provider_impl: a link attaches when it is created or enabled and
/// detaches when disabled or destroyed; objects in use cannot be destroyed. The kernel is the
/// host, so instantiate() attaches every enabled link that is not attached (system-wide) and
/// deinstantiate() detaches them all, keeping the records. Targets the kernel has no notion of
/// (the nginx URL filter, test hooks) are refused.
class kernel_event_provider final : public base_event_provider {
public:
    ~kernel_event_provider() override;
    kernel_event_provider(const kernel_event_provider &) = delete;
    kernel_event_provider &operator=(const kernel_event_provider &) = delete;

    /// Opens the folder of segment name (creating it when create is set), mounting bpffs at
    /// /sys/fs/bpf when nothing is mounted there.
    static result<std::unique_ptr<kernel_event_provider>> open(const std::string &name,
                                                               bool create);
    /// Detaches and releases every object of the folder and removes it.
    static result<void> remove(const std::string &name);
    /// Whether this process may load eBPF programs into the kernel; the reason when not.
    static result<void> available();
    /// The bpffs folder of a segment name.
    static result<std::string> folder_of(const std::string &name);

    std::string location() const override { return folder_; }

    result<uint32_t> create_program(const program_spec &spec) override;
    result<uint32_t> create_map(const map_create_spec &spec) override;
    result<uint32_t> create_attach_target(int32_t attach_type, const std::string &args) override;
    using base_event_provider::attach_program;
    result<uint32_t> attach_program(uint32_t prog_id, uint32_t target_id, uint64_t cookie) override;
    result<void> enable_link(uint32_t link_id) override;
    result<void> disable_link(uint32_t link_id) override;
    /// bpf_link_update on the pinned link; links the kernel cannot update in place (perf-event
    /// links: uprobes, tracepoints) get a new kernel link before the old one is released, so
    /// for a moment both programs run rather than neither.
    result<void> update_link(uint32_t link_id, uint32_t prog_id) override;
    result<void> destroy_object(uint32_t id) override;
    result<listing> list() const override;
    result<std::unique_ptr<map_access>> open_map(uint32_t id) const override;
    result<void> instantiate() override;
    void deinstantiate() override;

    /// Loads an ELF object as libbpf loads it (bpf_object__open_file, bpf_object__load: CO-RE
    /// relocations against the kernel's BTF, __kconfig externs, BTF ids of fentry, fexit and
    /// tp_btf programs, every map type the kernel has) and records its maps and programs in the
    /// catalogue under new ids, pinned as map_ID and prog_ID. sets are `--set` assignments
    /// (loader::set_global's grammar) applied to the global data sections before the load.
    /// On failure nothing is left: the error names the object and carries the end of libbpf's
    /// log (the verifier's, for a refused program).
    result<loaded_object> load_file(const std::string &path, const std::vector<std::string> &sets);

private:
    kernel_event_provider() = default;
    /// Records a kernel map or program made elsewhere (create_map, create_program, load_file)
    /// and pins it; the caller holds the folder's exclusive lock.
    result<uint32_t> adopt_map(const map_create_spec &spec, int fd);
    result<uint32_t> adopt_program(const program_spec &spec, int fd);
    /// The folder's exclusive lock, held until the returned value goes.
    std::shared_ptr<void> exclusive_lock() const;
    struct impl;
    std::unique_ptr<impl> impl_;
    std::string folder_;
};

} // namespace bpftime
