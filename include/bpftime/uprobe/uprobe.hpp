// SPDX-License-Identifier: MIT
/// @file
/// User-space uprobes and uretprobes: programs run at a function of this process through an
/// inline hook, with the kernel's x86-64 struct pt_regs as their context.
#pragma once

#include <bpftime/attach/attach.hpp>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace bpftime {

class uprobe_host;

/// The uprobe (or uretprobe) attach type in this process. Arguments are those of the kernel's
/// uprobes (BINARY:SYMBOL[+OFFSET] or BINARY:0xADDRESS); the binary must be mapped here.
/// Programs on one address run in link order; a uprobe and a uretprobe at one address share
/// one hook. Programs see the registers read-only; get_func_ip gives the probed address.
/// The probed code goes on with its whole register state: a probe at a function's first
/// instruction keeps what the calling convention makes live there (hook_site::function_entry),
/// one anywhere else (SYMBOL+OFFSET, a USDT site) keeps the whole x87/SSE/AVX/AVX-512 state.
class uprobe_attach_impl final : public base_attach_impl {
public:
    uprobe_attach_impl(std::shared_ptr<uprobe_host> host, bool retprobe);
    ~uprobe_attach_impl() override;

    result<int> create_attach(std::shared_ptr<const attached_program> prog,
                              const std::string &args) override;
    result<void> detach(int attach_id) override;

private:
    std::shared_ptr<uprobe_host> host_;
    bool retprobe_;
};

/// Marks the calling thread as one of bpftime's own for the rest of its life: probes of this
/// process skip the calls it makes (no program runs, nothing is counted), so a program
/// counting a function's calls counts the host's calls only. Hosts call it first on the
/// threads they start (the agent's follower, the JIT's background compiles through
/// vm::set_engine_thread_start).
void mark_probes_internal_thread();

/// While one lives, the calling thread does bpftime's own work (instantiating, compiling,
/// opening the segment) and probes skip its calls, as on a marked thread. Scopes nest.
class probes_internal_scope {
public:
    probes_internal_scope();
    ~probes_internal_scope();
    probes_internal_scope(const probes_internal_scope &) = delete;
    probes_internal_scope &operator=(const probes_internal_scope &) = delete;

private:
    bool was_;
};

/// A new host: the hooks of this process's uprobes and uretprobes.
std::shared_ptr<uprobe_host> make_uprobe_host();

/// The uprobe and uretprobe attach implementations of one new host, by attach type, for a
/// host process to register with its attach_manager (register_attach_impls).
attach_impl_set make_uprobe_attach_impls();

} // namespace bpftime
