// SPDX-License-Identifier: MIT
/// @file
/// Relocation of the instructions replaced by a hook's jump into its trampoline, with Zydis.
#include "hook_internal.hpp"

#include <Zydis/Zydis.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace bpftime::hook_detail {

namespace {

constexpr size_t jmp_size = 5;      // jmp rel32
constexpr size_t abs_jmp_size = 14; // jmp [rip+0]; .quad target

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

struct decoded {
    ZydisDecodedInstruction instr;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    uintptr_t address;
    size_t offset; // from the hooked address
};

std::string text(const decoded &d) {
    ZydisFormatter formatter;
    ZydisFormatterInit(&formatter, ZYDIS_FORMATTER_STYLE_INTEL);
    char buf[256];
    if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&formatter, &d.instr, d.ops,
                                                      d.instr.operand_count_visible, buf,
                                                      sizeof buf, d.address, nullptr)))
        return "?";
    return buf;
}

std::string where(const decoded &d) {
    return "'" + text(d) + "' at " + hex(d.address);
}

enum class kind { copy, rip_memory, jmp, jcc, jcc_rel8_only, call };

void put32(std::vector<uint8_t> &out, size_t at, int32_t v) {
    std::memcpy(&out[at], &v, 4);
}
void put64(std::vector<uint8_t> &out, uint64_t v) {
    for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void abs_jmp(std::vector<uint8_t> &out, uint64_t target) {
    out.insert(out.end(), {0xFF, 0x25, 0, 0, 0, 0}); // jmp [rip+0]
    put64(out, target);
}

bool fits32(int64_t v) {
    return v >= INT32_MIN && v <= INT32_MAX;
}

} // namespace

bool is_fill(const uint8_t *at, size_t n, size_t readable) {
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    for (size_t i = 0; i < n;) {
        if (at[i] == 0xCC) {
            ++i;
            continue;
        }
        // A nop form (90, 66 90, 0f 1f /0 ...): the fill assemblers put between functions;
        // the patch may cover only its first bytes, as no code runs there.
        ZydisDecodedInstruction in;
        ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
        if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, at + i,
                                                 std::min<size_t>(15, readable - i), &in, ops)) ||
            in.mnemonic != ZYDIS_MNEMONIC_NOP)
            return false;
        i += in.length;
    }
    return true;
}

result<relocation> relocate(uintptr_t address, size_t available, size_t function_size,
                            uintptr_t trampoline, size_t cover, size_t padding_after) {
    // cover 0: exactly one instruction (a trap probe's displaced instruction).
    cover = cover == 0 ? 1 : std::max(cover, jmp_size);
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    const auto *bytes = reinterpret_cast<const uint8_t *>(address);

    // Decode whole instructions until they cover the jump.
    std::vector<decoded> instrs;
    std::vector<kind> kinds;
    std::vector<uint64_t> targets;
    size_t covered = 0;
    size_t padding_used = 0;
    while (covered < cover) {
        decoded d{};
        d.address = address + covered;
        d.offset = covered;
        if (covered >= available ||
            !ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes + covered, available - covered,
                                                 &d.instr, d.ops)))
            return make_error(EINVAL, "cannot decode the instruction at " + hex(d.address) +
                                          " (not code, or it runs past the mapping)");
        const auto &in = d.instr;
        const size_t end = covered + in.length;
        if (in.mnemonic == ZYDIS_MNEMONIC_INT3)
            return make_error(EINVAL, "refusing to hook " + hex(address) + ": " + where(d) +
                                          " (int3 padding or a breakpoint) within the first " +
                                          std::to_string(jmp_size) + " bytes");
        if (function_size != 0 && end > function_size)
            return make_error(
                EINVAL, "refusing to hook " + hex(address) + ": the function is " +
                            std::to_string(function_size) + " bytes long, too short for a " +
                            std::to_string(jmp_size) + "-byte jump over whole instructions (" +
                            where(d) + " ends at " + std::to_string(end) + ")");
        const bool ends_flow = in.meta.category == ZYDIS_CATEGORY_RET ||
                               in.meta.category == ZYDIS_CATEGORY_UNCOND_BR ||
                               in.mnemonic == ZYDIS_MNEMONIC_UD2 ||
                               in.mnemonic == ZYDIS_MNEMONIC_HLT;
        // The function ends here, before the jump's end: the fill after it may take the rest
        // when the binary shows no code uses it and the bytes here are still fill.
        const bool into_padding = ends_flow && end < cover && function_size != 0 &&
                                  end == function_size && cover - end <= padding_after &&
                                  cover <= available &&
                                  is_fill(bytes + end, cover - end, available - end);
        if (ends_flow && end < cover && !into_padding)
            return make_error(EINVAL, "refusing to hook " + hex(address) + ": the code ends with " +
                                          where(d) + " after " + std::to_string(end) +
                                          " bytes; a 5-byte jump would overwrite what follows");
        if (into_padding)
            padding_used = cover - end;

        kind k = kind::copy;
        uint64_t target = 0;
        const ZydisDecodedOperand *op = nullptr;
        for (unsigned i = 0; i < in.operand_count; ++i)
            if ((d.ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && d.ops[i].imm.is_relative) ||
                (d.ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
                 d.ops[i].mem.base == ZYDIS_REGISTER_RIP))
                op = &d.ops[i];
        if (op || (in.attributes & ZYDIS_ATTRIB_IS_RELATIVE)) {
            if (!op || !ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&in, op, d.address, &target)))
                return make_error(EINVAL,
                                  "cannot relocate " + where(d) + ": unknown relative operand");
            if (op->type == ZYDIS_OPERAND_TYPE_MEMORY) {
                if (in.raw.disp.size != 32)
                    return make_error(EINVAL, "cannot relocate " + where(d) +
                                                  ": RIP-relative operand without a 32-bit "
                                                  "displacement");
                k = kind::rip_memory;
            } else if (in.mnemonic == ZYDIS_MNEMONIC_JMP) {
                k = kind::jmp;
            } else if (in.mnemonic == ZYDIS_MNEMONIC_CALL) {
                k = kind::call;
            } else if (in.meta.category == ZYDIS_CATEGORY_COND_BR &&
                       (in.opcode_map == ZYDIS_OPCODE_MAP_DEFAULT
                            ? (in.opcode & 0xF0) == 0x70
                            : in.opcode_map == ZYDIS_OPCODE_MAP_0F && (in.opcode & 0xF0) == 0x80)) {
                k = kind::jcc;
            } else if (in.mnemonic == ZYDIS_MNEMONIC_JCXZ || in.mnemonic == ZYDIS_MNEMONIC_JECXZ ||
                       in.mnemonic == ZYDIS_MNEMONIC_JRCXZ || in.mnemonic == ZYDIS_MNEMONIC_LOOP ||
                       in.mnemonic == ZYDIS_MNEMONIC_LOOPE ||
                       in.mnemonic == ZYDIS_MNEMONIC_LOOPNE) {
                k = kind::jcc_rel8_only;
            } else {
                return make_error(EINVAL, "cannot relocate " + where(d) +
                                              ": a relative instruction of an unsupported kind");
            }
        }
        if (in.meta.category == ZYDIS_CATEGORY_CALL && end < cover)
            return make_error(EINVAL, "cannot relocate " + where(d) +
                                          ": a call that is not the last replaced instruction "
                                          "(a thread inside the callee would return into the "
                                          "patch)");
        instrs.push_back(d);
        kinds.push_back(k);
        targets.push_back(target);
        covered = end + padding_used;
    }

    relocation r;
    r.patched = covered;
    r.padding_used = padding_used;
    // Sizes first, so that branches to a replaced instruction can go to its copy.
    std::vector<size_t> at;
    size_t pos = 0;
    for (size_t i = 0; i < instrs.size(); ++i) {
        at.push_back(pos);
        switch (kinds[i]) {
        case kind::copy:
        case kind::rip_memory:
            pos += instrs[i].instr.length;
            break;
        case kind::jmp:
            pos += abs_jmp_size;
            break;
        case kind::jcc:
            pos += 2 + abs_jmp_size;
            break;
        case kind::jcc_rel8_only:
            pos += instrs[i].instr.length + 2 + abs_jmp_size;
            break;
        case kind::call:
            pos += 6 + 6 + 16;
            break;
        }
    }
    // A branch to the replaced range goes to the copy (to an instruction start only).
    for (size_t i = 0; i < instrs.size(); ++i) {
        if (kinds[i] == kind::copy || kinds[i] == kind::rip_memory)
            continue;
        uint64_t &t = targets[i];
        if (t >= address && t < address + covered) {
            size_t j = 0;
            while (j < instrs.size() && instrs[j].address != t)
                ++j;
            if (j == instrs.size())
                return make_error(EINVAL, "cannot relocate " + where(instrs[i]) +
                                              ": it branches into the middle of an instruction");
            t = trampoline + at[j];
        }
    }

    auto &out = r.code;
    for (size_t i = 0; i < instrs.size(); ++i) {
        const auto &d = instrs[i];
        const auto &in = d.instr;
        const uintptr_t here = trampoline + out.size();
        r.from.push_back(d.offset);
        r.to.push_back(out.size());
        switch (kinds[i]) {
        case kind::copy:
            out.insert(out.end(), bytes + d.offset, bytes + d.offset + in.length);
            break;
        case kind::rip_memory: {
            const size_t start = out.size();
            out.insert(out.end(), bytes + d.offset, bytes + d.offset + in.length);
            const int64_t disp =
                static_cast<int64_t>(targets[i]) - static_cast<int64_t>(here + in.length);
            if (!fits32(disp))
                return make_error(ERANGE, "cannot relocate " + where(d) +
                                              ": the RIP-relative target " + hex(targets[i]) +
                                              " is out of 32-bit reach of the trampoline");
            put32(out, start + in.raw.disp.offset, static_cast<int32_t>(disp));
            break;
        }
        case kind::jmp:
            abs_jmp(out, targets[i]);
            break;
        case kind::jcc: {
            const uint8_t cc = in.opcode & 0x0F;
            out.push_back(static_cast<uint8_t>(0x70 | (cc ^ 1))); // the opposite condition
            out.push_back(static_cast<uint8_t>(abs_jmp_size));    // skips the jump
            abs_jmp(out, targets[i]);
            break;
        }
        case kind::jcc_rel8_only: {
            // jrcxz/loop have no rel32 form: "op taken; jmp not_taken; taken: jmp [target]".
            if (in.raw.imm[0].size != 8)
                return make_error(EINVAL, "cannot relocate " + where(d));
            const size_t start = out.size();
            out.insert(out.end(), bytes + d.offset, bytes + d.offset + in.length);
            out[start + in.raw.imm[0].offset] = 2;
            out.insert(out.end(), {0xEB, static_cast<uint8_t>(abs_jmp_size)});
            abs_jmp(out, targets[i]);
            break;
        }
        case kind::call: {
            // push [rip+6] (the return address); jmp [rip+8] (the target); the two addresses.
            out.insert(out.end(), {0xFF, 0x35, 6, 0, 0, 0, 0xFF, 0x25, 8, 0, 0, 0});
            put64(out, address + d.offset + in.length);
            put64(out, targets[i]);
            break;
        }
        }
    }
    // Back behind the patch: a rel32 jump, the trampoline being within reach.
    const uintptr_t back_from = trampoline + out.size() + jmp_size;
    const int64_t back = static_cast<int64_t>(address + covered) - static_cast<int64_t>(back_from);
    if (!fits32(back))
        return make_error(ERANGE, "the trampoline is out of reach of " + hex(address));
    r.from.push_back(covered);
    r.to.push_back(out.size());
    out.push_back(0xE9);
    out.insert(out.end(), 4, 0);
    put32(out, out.size() - 4, static_cast<int32_t>(back));
    return r;
}

uintptr_t find_branch_into(uintptr_t address, size_t size, size_t patched) {
    ZydisDecoder decoder;
    ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    const auto *bytes = reinterpret_cast<const uint8_t *>(address);
    for (size_t at = 0; at < size;) {
        decoded d{};
        d.address = address + at;
        if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, bytes + at, size - at, &d.instr, d.ops)))
            return 0; // data or padding: the sweep stops, what it saw was clean
        for (unsigned i = 0; i < d.instr.operand_count; ++i) {
            uint64_t target = 0;
            if (d.ops[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && d.ops[i].imm.is_relative &&
                ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&d.instr, &d.ops[i], d.address, &target)) &&
                target > address && target < address + patched)
                return d.address;
        }
        at += d.instr.length;
    }
    return 0;
}

} // namespace bpftime::hook_detail
