// SPDX-License-Identifier: MIT
// The attach type table, running a link's program, and the callable test hooks.
#include <bpftime/attach/attach.hpp>

#include <algorithm>
#include <mutex>

namespace bpftime {
namespace {

std::mutex types_mu;

std::vector<attach_type_info> &types() {
    static std::vector<attach_type_info> table{
        {attach_type_test, "test", "HOOK: a named hook that the host triggers by hand", true,
         false},
        {attach_type_nginx_url, "nginx-url", "none: every request of the nginx URL filter", true,
         false},
        {attach_type_uprobe, "uprobe", "BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS", true, true},
        {attach_type_uretprobe, "uretprobe", "BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS", true,
         true},
        {attach_type_tracepoint, "tracepoint", "CATEGORY:NAME, a kernel tracepoint", false, true},
    };
    return table;
}

} // namespace

std::vector<attach_type_info> attach_types() {
    std::lock_guard lock(types_mu);
    return types();
}

result<void> register_attach_type(attach_type_info info) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == info.type || t.name == info.name) {
            return make_error(EEXIST, "attach type " + std::to_string(info.type) + " (" +
                                          info.name + ") clashes with " + std::to_string(t.type) +
                                          " (" + t.name + ")");
        }
    }
    types().push_back(std::move(info));
    return {};
}

result<attach_type_info> find_attach_type(int32_t type) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == type) {
            return t;
        }
    }
    return make_error(EINVAL, "unknown attach type " + std::to_string(type));
}

std::optional<int32_t> parse_attach_type(std::string_view name) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.name == name) {
            return t.type;
        }
    }
    return std::nullopt;
}

std::string attach_type_name(int32_t type) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == type) {
            return t.name;
        }
    }
    return std::to_string(type);
}

result<std::shared_ptr<compiled_program>>
compiled_program::create(uint32_t id, uint64_t revision, std::string name, vm::program prog,
                         vm::engine_kind engine, const vm::engine_options &opts) {
    std::shared_ptr<compiled_program> c(
        new compiled_program(id, revision, std::move(name), std::move(prog)));
    auto eng = vm::make_engine(engine, c->prog_, opts);
    if (!eng) {
        return eng.err();
    }
    c->engine_ = std::move(*eng);
    return c;
}

result<uint64_t> compiled_program::run(void *ctx, uint64_t ctx_len,
                                       const vm::run_options &opts) const {
    auto r = engine_->run(ctx, ctx_len, opts);
    if (vm::run_end_fn end = prog_.helpers().run_end()) {
        end();
    }
    return r;
}

result<uint64_t> attached_program::run(void *ctx, uint64_t ctx_len, vm::run_options &opts) const {
    opts.info.attach_cookie = cookie_;
    auto r = prog_->run(ctx, ctx_len, opts);
    if (counters_) {
        counters_.count(!r.ok());
    }
    return r;
}

result<int> callable_attach_impl::create_attach(std::shared_ptr<const attached_program> prog,
                                                const std::string &args) {
    if (args.empty()) {
        return make_error(EINVAL, "a test attach needs a hook name");
    }
    int id = allocate_attach_id();
    std::unique_lock lock(mu_);
    auto at =
        std::upper_bound(entries_.begin(), entries_.end(), prog->link_id(),
                         [](uint32_t link, const entry &e) { return link < e.prog->link_id(); });
    entries_.insert(at, entry{id, args, std::move(prog)});
    return id;
}

result<void> callable_attach_impl::detach(int attach_id) {
    std::unique_lock lock(mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry &e) { return e.attach_id == attach_id; });
    if (it == entries_.end()) {
        return make_error(ENOENT, "no test attach with id " + std::to_string(attach_id));
    }
    entries_.erase(it);
    return {};
}

std::vector<result<uint64_t>> callable_attach_impl::trigger(std::string_view hook, void *ctx,
                                                            uint64_t ctx_len) {
    std::vector<std::shared_ptr<const attached_program>> progs;
    {
        std::shared_lock lock(mu_);
        for (const entry &e : entries_) {
            if (e.hook == hook) {
                progs.push_back(e.prog);
            }
        }
    }
    std::vector<result<uint64_t>> out;
    for (const auto &p : progs) {
        out.push_back(p->run(ctx, ctx_len));
    }
    return out;
}

size_t callable_attach_impl::attached(std::string_view hook) const {
    std::shared_lock lock(mu_);
    return static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(),
                                             [&](const entry &e) { return e.hook == hook; }));
}

} // namespace bpftime
