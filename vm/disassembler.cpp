// SPDX-License-Identifier: MIT
// Disassembler to the bpf_conformance text syntax, driven by the opcode table.
#include "text.hpp"

#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/disassembler.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace bpftime::vm {
namespace {

struct atomic_op {
    const char *name;
    int32_t imm;
};
constexpr atomic_op atomic_ops[] = {
    {"add", atomic_add}, {"or", atomic_or},     {"and", atomic_and},
    {"xor", atomic_xor}, {"xchg", atomic_xchg}, {"cmpxchg", atomic_cmpxchg},
};

// lddw pseudo sources by src value (1..6): name and whether next_imm is an argument.
struct pseudo {
    const char *name;
    bool two_args;
};
constexpr pseudo pseudos[] = {
    {"", false},          {"map_fd", false},  {"map_value", true},     {"var_addr", false},
    {"code_addr", false}, {"map_idx", false}, {"map_idx_value", true},
};
static_assert(std::size(pseudos) == pseudo_map_idx_value + 1);

// Concatenates strings, string views and C strings.
template <class... Parts>
std::string cat(const Parts &...parts) {
    std::string out;
    (out += ... += parts);
    return out;
}

std::string reg(unsigned r) {
    return cat("%r", std::to_string(r));
}

// Small values in signed decimal, others as the hex of their bit pattern.
std::string number(int64_t value, uint64_t bits) {
    return value >= -65536 && value <= 65536 ? std::to_string(value) : hex(bits);
}
std::string imm32(int32_t imm) {
    return number(imm, static_cast<uint32_t>(imm));
}

// `+N` or `-N`: a jump target or a memory offset.
std::string relative(int64_t delta) {
    return cat(delta >= 0 ? "+" : "", std::to_string(delta));
}

std::string memory(unsigned base, int16_t offset) {
    return cat("[", reg(base), offset != 0 ? relative(offset) : "", "]");
}

// The atomic operation an imm names (nullptr if none) and whether it adds `fetch`.
struct atomic_form {
    const char *name = nullptr;
    bool fetch = false;
};
atomic_form find_atomic(int32_t imm) {
    for (const atomic_op &op : atomic_ops) {
        if (op.imm == imm) {
            return {op.name, false};
        }
        if ((op.imm & atomic_fetch) == 0 && (op.imm | atomic_fetch) == imm) {
            return {op.name, true};
        }
    }
    return {};
}

// Whether every field holds a value the row allows and the text can express.
bool fields_ok(const opcode_info &row, const ebpf_inst &inst) {
    auto dst_ok = [&] {
        return row.dst == dst_rule::zero ? inst.dst == 0 : inst.dst < register_count;
    };
    auto src_ok = [&] {
        switch (row.src) {
        case src_rule::zero:
            return inst.src == 0;
        case src_rule::read:
            return inst.src < register_count;
        case src_rule::lddw:
            return inst.src <= pseudo_map_idx_value;
        case src_rule::call:
            return inst.src == call_helper || inst.src == call_local;
        }
        return false;
    };
    auto off_ok = [&] {
        switch (row.off) {
        case off_rule::zero:
            return inst.offset == 0;
        case off_rule::memory:
        case off_rule::jump:
            return true;
        case off_rule::divmod:
            return inst.offset == 0 || inst.offset == 1;
        case off_rule::movsx32:
            return inst.offset == 0 || inst.offset == 8 || inst.offset == 16;
        case off_rule::movsx64:
            return inst.offset == 0 || inst.offset == 8 || inst.offset == 16 || inst.offset == 32;
        }
        return false;
    };
    auto imm_ok = [&] {
        switch (row.imm) {
        case imm_rule::zero:
            return inst.imm == 0;
        case imm_rule::any:
        case imm_rule::jump:
        case imm_rule::call:
            return true;
        case imm_rule::endian:
            return inst.imm == 16 || inst.imm == 32 || inst.imm == 64;
        case imm_rule::atomic:
            return find_atomic(inst.imm).name != nullptr;
        }
        return false;
    };
    return dst_ok() && src_ok() && off_ok() && imm_ok();
}

std::optional<std::string> lddw(std::span<const ebpf_inst> insns, size_t pc) {
    const ebpf_inst &first = insns[pc];
    if (pc + 1 >= insns.size()) {
        return std::nullopt;
    }
    const ebpf_inst &second = insns[pc + 1];
    if (second.opcode != 0 || second.dst != 0 || second.src != 0 || second.offset != 0) {
        return std::nullopt;
    }
    std::string text = cat("lddw ", reg(first.dst), ", ");
    if (first.src == pseudo_imm64) {
        uint64_t value =
            static_cast<uint32_t>(first.imm) | uint64_t{static_cast<uint32_t>(second.imm)} << 32;
        return cat(text, number(static_cast<int64_t>(value), value));
    }
    const pseudo &p = pseudos[first.src];
    if (!p.two_args && second.imm != 0) {
        return std::nullopt;
    }
    return cat(text, p.name, "(", imm32(first.imm), p.two_args ? cat(", ", imm32(second.imm)) : "",
               ")");
}

// The text of insns[pc], or nothing when the assembler could not give back the same bytes.
std::optional<std::string> decode(std::span<const ebpf_inst> insns, size_t pc) {
    const ebpf_inst &inst = insns[pc];
    const opcode_info *row = find_opcode(inst.opcode);
    if (!row || row->unsupported || !fields_ok(*row, inst)) {
        return std::nullopt;
    }
    std::string name = row->mnemonic;
    std::string dst = reg(inst.dst);
    std::string source = row->src == src_rule::read ? reg(inst.src) : imm32(inst.imm);
    switch (row->kind) {
    case op_kind::alu:
        if (inst.offset != 0) {
            name = row->off == off_rule::divmod
                       ? cat("s", name)
                       : cat("movsx", std::to_string(inst.offset),
                             op_class(inst.opcode) == cls_alu ? "32" : "64");
        }
        return cat(name, " ", dst, ", ", source);
    case op_kind::neg:
    case op_kind::callx:
        return cat(name, " ", dst);
    case op_kind::endian:
        return cat(name, std::to_string(inst.imm), " ", dst);
    case op_kind::lddw:
        return lddw(insns, pc);
    case op_kind::ldx:
    case op_kind::ldsx:
        return cat(name, " ", dst, ", ", memory(inst.src, inst.offset));
    case op_kind::st:
    case op_kind::stx:
        return cat(name, " ", memory(inst.dst, inst.offset), ", ", source);
    case op_kind::atomic: {
        auto [op, fetch] = find_atomic(inst.imm);
        return cat("lock ", fetch ? "fetch " : "", op, access_size(inst.opcode) == 4 ? "32 " : " ",
                   memory(inst.dst, inst.offset), ", ", source);
    }
    case op_kind::ja:
        return cat(name, " ", relative(jump_offset(inst)));
    case op_kind::jcond:
        return cat(name, " ", dst, ", ", source, ", ", relative(inst.offset));
    case op_kind::call:
        return inst.src == call_local ? cat("call local ", relative(inst.imm))
                                      : cat("call ", imm32(inst.imm));
    case op_kind::exit:
        return name;
    }
    return std::nullopt;
}

std::string invalid(const ebpf_inst &inst) {
    char buf[80];
    std::snprintf(buf, sizeof buf, ".invalid 0x%02x dst=%u src=%u off=%d imm=%d",
                  unsigned{inst.opcode}, unsigned{inst.dst}, unsigned{inst.src}, int{inst.offset},
                  int{inst.imm});
    return buf;
}

} // namespace

std::string disassemble_one(std::span<const ebpf_inst> insns, size_t pc) {
    if (pc >= insns.size()) {
        return {};
    }
    std::optional<std::string> text = decode(insns, pc);
    return text ? *text : invalid(insns[pc]);
}

std::string disassemble(std::span<const ebpf_inst> insns, bool numbered) {
    std::string out;
    for (size_t pc = 0; pc < insns.size();) {
        std::optional<std::string> text = decode(insns, pc);
        if (numbered) {
            char prefix[32];
            std::snprintf(prefix, sizeof prefix, "%4zu: ", pc);
            out += prefix;
        }
        out += text ? *text : invalid(insns[pc]);
        out += '\n';
        // A decoded lddw consumes its second slot; an undecodable one shows it on its own line.
        pc += text && insns[pc].opcode == op_lddw ? 2 : 1;
    }
    return out;
}

} // namespace bpftime::vm
