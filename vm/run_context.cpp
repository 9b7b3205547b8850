// SPDX-License-Identifier: MIT
#include "text.hpp"

#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <cstring>

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

void run_context::clear_failure() {
    failed_ = false;
    failure_.clear();
    failure_code_ = fault_helper;
    failure_positioned_ = false;
    tail_target_ = nullptr;
    tail_keep_.reset();
}

void run_context::fail(std::string message) {
    if (!failed_) {
        failed_ = true;
        failure_ = std::move(message);
    }
}

std::optional<uint64_t> run_context::call(uint64_t code_address, uint64_t r1, uint64_t r2,
                                          uint64_t r3, uint64_t r4, uint64_t r5) {
    if (failed_) {
        return std::nullopt;
    }
    const uint64_t pc = code_address & ~code_address_tag;
    if ((code_address & code_address_tag) != code_address_tag || pc > UINT32_MAX ||
        runner_ == nullptr || !program_->is_callback(static_cast<size_t>(pc))) {
        fail("the callback " + hex(code_address) +
             " is not the code address of a subprogram of this program");
        return std::nullopt;
    }
    // The current frame: the entry frame's region is its reachable part, a callee's region
    // starts one frame below its frame pointer.
    const uint64_t top = stack.start + stack.size;
    const uint64_t fp = std::min(top, stack.start + stack_frame_size);
    const size_t depth = (top - fp) / stack_frame_size;
    if (depth + 1 >= max_call_depth) {
        failure_code_ = fault_call_depth;
        fail("the callback's frame: call depth exceeds " + std::to_string(max_call_depth) +
             " frames");
        return std::nullopt;
    }
    const uint64_t callee_fp = fp - stack_frame_size;
    const memory_region saved = stack;
    stack = {callee_fp - stack_frame_size, top - (callee_fp - stack_frame_size), true};
    std::memset(reinterpret_cast<void *>(stack.start), 0, stack_frame_size);
    const uint64_t args[5] = {r1, r2, r3, r4, r5};
    auto r = runner_(runner_state_, static_cast<size_t>(pc), args, callee_fp, depth + 1);
    stack = saved;
    if (!r) {
        // The callback's fault (or what stopped a helper inside it, already named at its call)
        // is the run's.
        failed_ = true;
        failure_code_ = r.err().code;
        failure_positioned_ = true;
        failure_ = std::move(r).err().message;
        return std::nullopt;
    }
    return *r;
}

bool run_context::tail_call(engine &target, std::shared_ptr<const void> keep) {
    // Only from the entry function: a callee's region holds its frame and its callers'.
    if (failed_ || stack.size > stack_frame_size) {
        return false;
    }
    tail_target_ = &target;
    tail_keep_ = std::move(keep);
    tail_calls_++;
    failed_ = true; // the engines stop the program as after a failing helper
    return true;
}

} // namespace bpftime::vm
