// SPDX-License-Identifier: MIT
/// @file
/// Attaching a program at a USDT probe through any provider, as libbpf's
/// bpf_program__attach_usdt does: each site of the probe gets its argument spec written into
/// the program's `__bpf_usdt_specs` map and a uprobe target (with the probe's semaphore) linked
/// with the spec id as attach cookie.
#pragma once

#include <bpftime/provider/event_provider.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace bpftime {

/// One site attached.
struct usdt_link {
    uint64_t address = 0; ///< the site's ELF virtual address
    uint32_t target_id = 0;
    uint32_t link_id = 0;
    uint32_t spec_id = 0; ///< the program's __bpf_usdt_specs index, the link's cookie
};

/// Attaches prog_id at every site of the USDT probe "BINARY:PROVIDER:NAME" (resolve_usdt_target);
/// usdt_cookie is what bpf_usdt_cookie gives the program there. The program must use libbpf's
/// usdt.bpf.h (its `__bpf_usdt_specs` map); spec ids already used by the cookies of other
/// links of programs sharing that map are left alone. On failure nothing made stays.
result<std::vector<usdt_link>> attach_usdt(base_event_provider &provider, uint32_t prog_id,
                                           std::string_view args, uint64_t usdt_cookie = 0);

} // namespace bpftime
