// SPDX-License-Identifier: MIT
#include <bpftime/vm/helper_registry.hpp>

#include <algorithm>
#include <ctime>

namespace bpftime::vm {

helper_registry::helper_registry(const helper_registry &other) {
    std::lock_guard lock(other.mu_);
    helpers_ = other.helpers_;
    run_end_helpers_ = other.run_end_helpers_;
    run_end_.store(other.run_end(), std::memory_order_relaxed);
}

helper_registry &helper_registry::operator=(const helper_registry &other) {
    if (this != &other) {
        std::scoped_lock lock(mu_, other.mu_);
        helpers_ = other.helpers_;
        run_end_helpers_ = other.run_end_helpers_;
        run_end_.store(other.run_end(), std::memory_order_relaxed);
    }
    return *this;
}

void helper_registry::set_run_end(run_end_fn fn, std::vector<uint32_t> leaving) {
    std::lock_guard lock(mu_);
    run_end_helpers_ = std::move(leaving);
    run_end_.store(fn, std::memory_order_relaxed);
}

std::vector<uint32_t> helper_registry::run_end_helpers() const {
    std::lock_guard lock(mu_);
    return run_end_helpers_;
}

bool helper_registry::leaves_for_run_end(uint32_t id) const {
    std::lock_guard lock(mu_);
    return std::find(run_end_helpers_.begin(), run_end_helpers_.end(), id) !=
           run_end_helpers_.end();
}

helper_registry &helper_registry::global() {
    static helper_registry *registry = [] {
        auto *r = new helper_registry();
        register_builtin_helpers(*r);
        return r;
    }();
    return *registry;
}

result<void> helper_registry::register_helper(uint32_t id, std::string name, helper_fn fn) {
    if (fn == nullptr) {
        return make_error(EINVAL,
                          "helper " + std::to_string(id) + " (" + name + ") has no function");
    }
    std::lock_guard lock(mu_);
    auto [it, inserted] = helpers_.try_emplace(id, helper_info{id, name, fn});
    if (!inserted) {
        return make_error(EEXIST,
                          "helper id " + std::to_string(id) + " is taken by " + it->second.name);
    }
    return {};
}

void helper_registry::replace_helper(uint32_t id, std::string name, helper_fn fn) {
    std::lock_guard lock(mu_);
    helpers_[id] = helper_info{id, std::move(name), fn};
}

const helper_info *helper_registry::find(uint32_t id) const {
    std::lock_guard lock(mu_);
    auto it = helpers_.find(id);
    return it == helpers_.end() ? nullptr : &it->second;
}

std::vector<helper_info> helper_registry::list() const {
    std::lock_guard lock(mu_);
    std::vector<helper_info> out;
    out.reserve(helpers_.size());
    for (const auto &[id, info] : helpers_) {
        out.push_back(info);
    }
    return out;
}

namespace {

// 5: u64 bpf_ktime_get_ns(void), monotonic time as in Linux.
uint64_t ktime_get_ns(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

} // namespace

void register_builtin_helpers(helper_registry &registry) {
    registry.replace_helper(5, "ktime_get_ns", ktime_get_ns);
}

} // namespace bpftime::vm
