// SPDX-License-Identifier: MIT
// The runtime functions the JIT's generated code calls.
#include "runtime.hpp"

#include <bpftime/cpu/vector_state.hpp>

namespace bpftime::vm::jit {
namespace {

// rt_fault's body, which the other entries inline (a call between exported functions of a
// position-independent library is not inlined).
inline void record_fault(jit_state *s, uint64_t kind, uint64_t pc, uint64_t addr, uint64_t len) {
    s->fault = kind;
    s->fault_pc = pc;
    s->fault_addr = addr;
    s->fault_len = len;
}

} // namespace

void rt_fault(jit_state *s, uint64_t kind, uint64_t pc, uint64_t addr, uint64_t len) {
    record_fault(s, kind, pc, addr, len);
}

uint64_t rt_check(jit_state *s, uint64_t addr, uint64_t len, uint64_t write, uint64_t pc) {
    if (s->rc_ready == 0) {
        rt_prepare(s);
    }
    if (const memory_region *r = s->rc->find_region(addr, len, write != 0)) {
        if (r->size >= max_access) {
            s->read_lo = r->start;
            s->read_span = r->size;
            if (r->writable) {
                s->write_lo = r->start;
                s->write_span = r->size;
            }
        }
        return 1;
    }
    record_fault(s, fault_access, pc, addr, len);
    s->fault_write = write;
    return 0;
}

uint64_t rt_callx(jit_state *s, uint64_t id, uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                  uint64_t r5, uint64_t pc) {
    if (s->rc_ready == 0) {
        rt_prepare(s);
    }
    const helper_info *h = s->prog->helpers().find(static_cast<uint32_t>(id));
    if (h == nullptr) {
        record_fault(s, fault_unknown_helper, pc, id, 0);
        return 0;
    }
    uint64_t r0 = h->fn(r1, r2, r3, r4, r5, s->rc);
    if (*s->helper_failed) {
        record_fault(s, fault_helper_failed, pc, 0, 0);
    }
    return r0;
}

BPFTIME_KEEPING_VECTOR_STATE(bpftime_jit_prepare_keeping, rt_prepare);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_jit_fault_keeping, rt_fault);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_jit_check_keeping, rt_check);
extern "C" void bpftime_jit_prepare_keeping();
extern "C" void bpftime_jit_fault_keeping();
extern "C" void bpftime_jit_check_keeping();

// A wrapper that calls target keeping rdi, rsi, rdx, rcx, r8, r9 and r10, and rax too when the
// target returns nothing: with r11 free, what preserve_most asks of a callee. Seven pushes after
// the return address leave the stack aligned for the call; eight need one more word.
#define BPFTIME_PRESERVING_MOST(wrapper, target, save_rax, restore_rax)                            \
    extern "C" decltype(&target) const wrapper##_target                                            \
        __attribute__((visibility("hidden"), used)) = &target;                                     \
    asm(".text\n.p2align 4\n.globl " #wrapper "\n.hidden " #wrapper "\n.type " #wrapper            \
        ", @function\n" #wrapper ":\n" save_rax "  pushq %rdi\n  pushq %rsi\n  pushq %rdx\n"       \
        "  pushq %rcx\n  pushq %r8\n  pushq %r9\n  pushq %r10\n"                                   \
        "  call *" #wrapper "_target(%rip)\n"                                                      \
        "  popq %r10\n  popq %r9\n  popq %r8\n  popq %rcx\n  popq %rdx\n  popq %rsi\n"             \
        "  popq %rdi\n" restore_rax "  ret\n"                                                      \
        ".size " #wrapper ", . - " #wrapper "\n")
#define BPFTIME_SAVE_RAX "  pushq %rax\n  subq $8, %rsp\n"
#define BPFTIME_RESTORE_RAX "  addq $8, %rsp\n  popq %rax\n"

BPFTIME_PRESERVING_MOST(bpftime_jit_prepare_preserving, rt_prepare, BPFTIME_SAVE_RAX,
                        BPFTIME_RESTORE_RAX);
BPFTIME_PRESERVING_MOST(bpftime_jit_fault_preserving, rt_fault, BPFTIME_SAVE_RAX,
                        BPFTIME_RESTORE_RAX);
BPFTIME_PRESERVING_MOST(bpftime_jit_check_preserving, rt_check, "", "");
extern "C" void bpftime_jit_prepare_preserving();
extern "C" void bpftime_jit_fault_preserving();
extern "C" void bpftime_jit_check_preserving();

const preserving_most &preserving() {
    static const preserving_most p{address_of(&bpftime_jit_prepare_preserving),
                                   address_of(&bpftime_jit_fault_preserving),
                                   address_of(&bpftime_jit_check_preserving)};
    return p;
}

const keeping_vectors &keeping() {
    static const keeping_vectors k{address_of(&bpftime_jit_prepare_keeping),
                                   address_of(&bpftime_jit_fault_keeping),
                                   address_of(&bpftime_jit_check_keeping)};
    return k;
}

} // namespace bpftime::vm::jit
