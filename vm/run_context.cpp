// SPDX-License-Identifier: MIT
#include <bpftime/vm/vm.hpp>

#include <algorithm>

namespace bpftime::vm {
namespace {

bool allows(const memory_region &r, uint64_t addr, uint64_t len, bool write) {
    return (!write || r.writable) && r.contains(addr, len);
}

} // namespace

run_context::run_context(memory_region stack_region, memory_region input,
                         std::span<const memory_region> program_regions,
                         std::span<const memory_region> extra_regions, void *user_data)
    : stack(stack_region), input_(input), program_regions_(program_regions),
      extra_regions_(extra_regions), user_data_(user_data) {}

void run_context::add_region(const void *ptr, uint64_t len, bool writable) {
    memory_region r{reinterpret_cast<uint64_t>(ptr), len, writable};
    if (ptr == nullptr || len == 0) {
        return;
    }
    // Programs that look up the same map value in a loop hand out the same region again.
    auto same = [&](const memory_region &o) {
        return o.start == r.start && o.size == r.size && o.writable == r.writable;
    };
    if (std::any_of(dynamic_.rbegin(), dynamic_.rend(), same)) {
        return;
    }
    if (dynamic_.size() >= max_dynamic_regions) {
        fail("a helper handed out more than " + std::to_string(max_dynamic_regions) +
             " memory regions in one run");
        return;
    }
    dynamic_.push_back(r);
}

bool run_context::check_access(uint64_t addr, uint64_t len, bool write) const {
    return allows(stack, addr, len, write) || check_slow(addr, len, write);
}

bool run_context::check_slow(uint64_t addr, uint64_t len, bool write) const {
    auto hit = [&](const memory_region &r) { return allows(r, addr, len, write); };
    return hit(input_) || std::any_of(program_regions_.begin(), program_regions_.end(), hit) ||
           std::any_of(extra_regions_.begin(), extra_regions_.end(), hit) ||
           std::any_of(dynamic_.rbegin(), dynamic_.rend(), hit);
}

void run_context::fail(std::string message) {
    if (!failed_) {
        failed_ = true;
        failure_ = std::move(message);
    }
}

} // namespace bpftime::vm
