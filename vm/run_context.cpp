// SPDX-License-Identifier: MIT
#include <bpftime/vm/vm.hpp>

#include <algorithm>

namespace bpftime::vm {
namespace {

bool allows(const memory_region &r, uint64_t addr, uint64_t len, bool write) {
    return (!write || r.writable) && r.contains(addr, len);
}

} // namespace

void run_context::add_region(const void *ptr, uint64_t len, bool writable) {
    memory_region r{reinterpret_cast<uint64_t>(ptr), len, writable};
    if (ptr == nullptr || len == 0) {
        return;
    }
    if (sink_ != nullptr) {
        *sink_ = r;
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

void run_context::hint_region(const void *ptr, uint64_t len) {
    if (sink_ == nullptr || len == 0) {
        return;
    }
    // The region that holds it, writable if it is (reads are the common case).
    const uint64_t addr = reinterpret_cast<uint64_t>(ptr);
    const memory_region *r = find_region(addr, len, true);
    if (r == nullptr) {
        r = find_region(addr, len, false);
    }
    if (r != nullptr) {
        *sink_ = *r;
    }
}

bool run_context::check_access(uint64_t addr, uint64_t len, bool write) const {
    return allows(stack, addr, len, write) || find_region(addr, len, write) != nullptr;
}

const memory_region *run_context::find_region(uint64_t addr, uint64_t len, bool write) const {
    auto hit = [&](const memory_region &r) { return allows(r, addr, len, write); };
    if (hit(input_)) {
        return &input_;
    }
    for (std::span<const memory_region> regions : {program_regions_, extra_regions_}) {
        if (auto it = std::find_if(regions.begin(), regions.end(), hit); it != regions.end()) {
            return &*it;
        }
    }
    auto it = std::find_if(dynamic_.rbegin(), dynamic_.rend(), hit);
    return it == dynamic_.rend() ? nullptr : &*it;
}

void run_context::fail(std::string message) {
    if (!failed_) {
        failed_ = true;
        failure_ = std::move(message);
    }
}

} // namespace bpftime::vm
