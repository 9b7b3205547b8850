// SPDX-License-Identifier: MIT
#include <bpftime/attach/nginx.hpp>

#include <algorithm>
#include <array>

namespace bpftime {

result<int> nginx_module_attach_impl::create_attach(std::shared_ptr<const attached_program> prog,
                                                    const std::string &args) {
    if (!args.empty()) {
        return make_error(EINVAL, "the nginx URL filter takes no arguments (got '" + args + "')");
    }
    int id = allocate_attach_id();
    auto at =
        std::upper_bound(entries_.begin(), entries_.end(), prog->link_id(),
                         [](uint32_t link, const entry &e) { return link < e.prog->link_id(); });
    entries_.insert(at, entry{id, std::move(prog)});
    return id;
}

result<void> nginx_module_attach_impl::detach(int attach_id) {
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry &e) { return e.attach_id == attach_id; });
    if (it == entries_.end()) {
        return make_error(ENOENT,
                          "no nginx URL filter attach with id " + std::to_string(attach_id));
    }
    entries_.erase(it);
    return {};
}

result<int> nginx_module_attach_impl::replace_attach(int attach_id,
                                                     std::shared_ptr<const attached_program> prog,
                                                     const std::string &args) {
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry &e) { return e.attach_id == attach_id; });
    if (it == entries_.end() || !args.empty() || it->prog->link_id() != prog->link_id()) {
        return base_attach_impl::replace_attach(attach_id, std::move(prog), args);
    }
    it->prog = std::move(prog);
    return attach_id;
}

bool nginx_module_attach_impl::filter(const bpftime_nginx_request &req, nginx_verdict &verdict,
                                      nginx_failure &failure) const {
    // The request's strings are memory the programs may read, nothing more.
    auto region = [](const char *p, uint32_t n) {
        return vm::memory_region{reinterpret_cast<uint64_t>(p), p == nullptr ? 0 : n, false};
    };
    const std::array<vm::memory_region, 5> regions{
        region(req.path, req.path_len), region(req.uri, req.uri_len),
        region(req.method, req.method_len), region(req.host, req.host_len),
        region(req.client, req.client_len)};
    vm::run_options opts;
    opts.instruction_budget = instruction_budget;
    opts.mem_writable = false;
    opts.regions = regions;
    void *ctx = const_cast<bpftime_nginx_request *>(&req);

    verdict = {};
    for (const entry &e : entries_) {
        const vm::run_status st = e.prog->run_direct(ctx, sizeof req, opts);
        if (!st.ok()) [[unlikely]] {
            failure = {e.prog->link_id(), *st.fault};
            return false;
        }
        if (int status = bpftime_nginx_status(st.r0); status != BPFTIME_NGINX_ACCEPT) {
            e.prog->counters().count_decision(store::link_counters::decision::refused, status);
            verdict.status = status;
            verdict.link_id = e.prog->link_id();
            return true;
        }
        e.prog->counters().count_decision(store::link_counters::decision::allowed);
    }
    return true;
}

void nginx_module_attach_impl::count_fail_policy(uint32_t link_id, bool open) const {
    for (const entry &e : entries_) {
        if (e.prog->link_id() == link_id) {
            e.prog->counters().count_decision(open ? store::link_counters::decision::fail_open
                                                   : store::link_counters::decision::fail_closed);
            return;
        }
    }
}

} // namespace bpftime
