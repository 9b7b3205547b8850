// SPDX-License-Identifier: MIT
// Input layout: byte 0 = length n of the input memory, then n bytes of memory, then the
// program's instruction bytes (a trailing partial instruction is dropped).
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <cstring>
#include <vector>

using namespace bpftime::vm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    size_t mem_len = std::min<size_t>(data[0], size - 1);
    std::vector<uint8_t> mem(data + 1, data + 1 + mem_len);
    const uint8_t *code = data + 1 + mem_len;
    size_t code_len = (size - 1 - mem_len) / sizeof(ebpf_inst);

    std::vector<ebpf_inst> insns(code_len);
    if (code_len > 0) {
        std::memcpy(static_cast<void *>(insns.data()), code, code_len * sizeof(ebpf_inst));
    }

    // The disassembler must cope with anything, valid or not.
    (void)disassemble(insns, true);

    load_options lo;
    lo.max_instructions = 4096;
    auto prog = program::load(std::move(insns), lo);
    if (!prog) {
        // Every refusal names an instruction.
        if (prog.err().message.rfind("instruction ", 0) != 0) {
            __builtin_trap();
        }
        return 0;
    }
    auto eng = make_engine(engine_kind::interpreter, *prog);
    if (!eng) {
        __builtin_trap();
    }
    run_options ro;
    ro.instruction_budget = 100'000;
    auto r = (*eng)->run(mem.empty() ? nullptr : mem.data(), mem.size(), ro);
    (void)r;
    return 0;
}
