// SPDX-License-Identifier: MIT
// A direct run from code that uses no vector register (this file is compiled for the
// general-purpose registers only), for vector_state_test.cpp.
#include <bpftime/vm/vm.hpp>

#include <cstdint>

uint64_t run_direct_general_registers_only(bpftime::vm::engine *e, void *mem, uint64_t len) {
    const bpftime::vm::run_status st = e->run_direct(mem, len);
    return st.ok() ? st.r0 : UINT64_MAX;
}
