// SPDX-License-Identifier: MIT
// Assembler for the bpf_conformance text syntax, driven by the opcode table.
#include "text.hpp"

#include <bpftime/vm/assembler.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bpftime::vm {
namespace {

// A mnemonic that names a table row (base) with a fixed offset or imm field.
struct alias {
    std::string_view name;
    std::string_view base;
    int16_t offset;
    int32_t imm;
};
constexpr alias aliases[] = {
    {"sdiv", "div", 1, 0},       {"sdiv32", "div32", 1, 0},   {"smod", "mod", 1, 0},
    {"smod32", "mod32", 1, 0},   {"movsx832", "mov32", 8, 0}, {"movsx1632", "mov32", 16, 0},
    {"movsx864", "mov", 8, 0},   {"movsx1664", "mov", 16, 0}, {"movsx3264", "mov", 32, 0},
    {"le16", "le", 0, 16},       {"le32", "le", 0, 32},       {"le64", "le", 0, 64},
    {"be16", "be", 0, 16},       {"be32", "be", 0, 32},       {"be64", "be", 0, 64},
    {"bswap16", "bswap", 0, 16}, {"bswap32", "bswap", 0, 32}, {"bswap64", "bswap", 0, 64},
    {"swap16", "bswap", 0, 16},  {"swap32", "bswap", 0, 32},  {"swap64", "bswap", 0, 64},
};

// `lock [fetch] OP[32] [%rD+off], %rS`: the imm of each OP.
struct atomic_op {
    std::string_view name;
    int32_t imm;
};
constexpr atomic_op atomic_ops[] = {
    {"add", atomic_add}, {"or", atomic_or},     {"and", atomic_and},
    {"xor", atomic_xor}, {"xchg", atomic_xchg}, {"cmpxchg", atomic_cmpxchg},
};

// `lddw %rD, NAME(imm)` or `NAME(imm, next_imm)`.
struct pseudo {
    std::string_view name;
    uint8_t src;
    size_t args;
};
constexpr pseudo pseudos[] = {
    {"map_fd", pseudo_map_fd, 1},     {"map_value", pseudo_map_value, 2},
    {"var_addr", pseudo_var_addr, 1}, {"code_addr", pseudo_code_addr, 1},
    {"map_idx", pseudo_map_idx, 1},   {"map_idx_value", pseudo_map_idx_value, 2},
};

// Operands after the mnemonic (and after a `fetch`, `helper` or `local` keyword).
constexpr size_t operand_count(op_kind kind) {
    switch (kind) {
    case op_kind::exit:
        return 0;
    case op_kind::neg:
    case op_kind::endian:
    case op_kind::ja:
    case op_kind::call:
    case op_kind::callx:
        return 1;
    case op_kind::atomic:
    case op_kind::jcond:
        return 3;
    default:
        return 2;
    }
}

// Splits at spaces and commas, except inside [] and (): there spaces are dropped and commas
// kept, so `[%r1 + 2]` and `map_value(3, 16)` each stay one token.
std::vector<std::string> tokenize(std::string_view line) {
    std::vector<std::string> tokens(1);
    int depth = 0;
    for (char c : line) {
        if (depth <= 0 && (is_space(c) || c == ',')) {
            if (!tokens.back().empty()) {
                tokens.emplace_back();
            }
        } else if (!is_space(c)) {
            depth += (c == '[' || c == '(') - (c == ']' || c == ')');
            tokens.back() += c;
        }
    }
    if (tokens.back().empty()) {
        tokens.pop_back();
    }
    return tokens;
}

bool is_register(std::string_view token) {
    return token.starts_with('%');
}

// The row of a mnemonic; of a K/X pair, the one that matches the operand form.
const opcode_info *lookup(std::string_view mnemonic, bool register_form) {
    const opcode_info *found = nullptr;
    for (const opcode_info &row : opcode_table()) {
        if (!row.unsupported && row.mnemonic == mnemonic &&
            (!found || ((row.opcode & src_x) != 0) == register_form)) {
            found = &row;
        }
    }
    return found;
}

class assembler {
public:
    result<std::vector<ebpf_inst>> run(std::string_view text);

private:
    struct memory_operand {
        uint8_t reg = 0;
        int16_t offset = 0;
    };
    struct label {
        size_t slot;
        size_t line;
    };
    struct fixup {
        size_t slot;
        std::string label;
        size_t line;
        bool in_imm;
    };

    // The first error wins; parsing goes on with dummy values and the caller checks error_.
    void fail(const std::string &message) {
        if (!error_) {
            error_ = "line " + std::to_string(line_) + ": " + message;
        }
    }

    void define_label(std::string_view name);
    void instruction(std::string_view text);
    void lddw(ebpf_inst first, std::string_view operand);
    void resolve();
    uint8_t reg(std::string_view token);
    uint64_t number(std::string_view token, const std::string &what, uint64_t negative_max,
                    uint64_t positive_max);
    int32_t imm32(std::string_view token) {
        return static_cast<int32_t>(number(token, "immediate", 0x8000'0000, 0xffff'ffff));
    }
    memory_operand memory(std::string_view token);
    void target(std::string_view token, ebpf_inst &inst, bool in_imm);

    std::vector<ebpf_inst> out_;
    std::map<std::string, label, std::less<>> labels_;
    std::vector<fixup> fixups_;
    std::optional<size_t> first_exit_;
    size_t line_ = 0;
    std::optional<std::string> error_;
};

result<std::vector<ebpf_inst>> assembler::run(std::string_view text) {
    while (!text.empty() && !error_) {
        line_++;
        std::string_view line = text.substr(0, text.find('\n'));
        text.remove_prefix(std::min(line.size() + 1, text.size()));
        line = trim(line.substr(0, line.find('#')));
        if (line.ends_with(':')) {
            define_label(line.substr(0, line.size() - 1));
        } else if (!line.empty()) {
            instruction(line);
        }
    }
    if (!error_) {
        resolve();
    }
    if (error_) {
        return make_error(EINVAL, *error_);
    }
    return std::move(out_);
}

void assembler::define_label(std::string_view name) {
    if (name.empty() || std::ranges::any_of(name, [](char c) { return is_space(c) || c == ','; })) {
        fail("bad label '" + std::string(name) + ":'");
        return;
    }
    auto [it, added] = labels_.try_emplace(std::string(name), label{out_.size(), line_});
    if (!added) {
        fail("duplicate label " + std::string(name) + " (first defined on line " +
             std::to_string(it->second.line) + ")");
    }
}

void assembler::instruction(std::string_view text) {
    std::vector<std::string> tokens = tokenize(text);
    if (tokens.empty()) {
        fail("no mnemonic in '" + std::string(text) + "'");
        return;
    }
    const std::string &mnemonic = tokens.front();
    std::span<const std::string> ops(tokens.begin() + 1, tokens.end());

    alias form{mnemonic, mnemonic, 0, 0};
    if (auto it = std::ranges::find(aliases, std::string_view(mnemonic), &alias::name);
        it != std::end(aliases)) {
        form = *it;
    }
    bool register_form = ops.size() > 1 ? is_register(ops[1]) : !ops.empty() && is_register(ops[0]);
    const opcode_info *row = lookup(form.base, register_form);
    // A bare `le`, `be` or `bswap` has no width.
    if (!row || (row->kind == op_kind::endian && form.imm == 0)) {
        fail("unknown mnemonic '" + mnemonic + "' in '" + std::string(text) + "'");
        return;
    }
    if (form.offset != 0 && row->off == off_rule::zero) {
        fail(mnemonic + " needs a register source in '" + std::string(text) + "'");
        return;
    }

    bool keyword =
        !ops.empty() && ((row->kind == op_kind::atomic && ops[0] == "fetch") ||
                         (row->kind == op_kind::call && (ops[0] == "helper" || ops[0] == "local")));
    bool fetch = keyword && ops[0] == "fetch";
    bool local = keyword && ops[0] == "local";
    ops = ops.subspan(keyword ? 1 : 0);
    if (ops.size() != operand_count(row->kind)) {
        fail("wrong number of operands in '" + std::string(text) + "'");
        return;
    }

    ebpf_inst inst{.opcode = row->opcode, .offset = form.offset, .imm = form.imm};
    switch (row->kind) {
    case op_kind::alu:
    case op_kind::jcond:
        inst.dst = reg(ops[0]);
        if (row->src == src_rule::read) {
            inst.src = reg(ops[1]);
        } else {
            inst.imm = imm32(ops[1]);
        }
        if (row->kind == op_kind::jcond) {
            target(ops[2], inst, false);
        }
        break;
    case op_kind::neg:
    case op_kind::endian:
    case op_kind::callx:
        inst.dst = reg(ops[0]);
        break;
    case op_kind::lddw:
        inst.dst = reg(ops[0]);
        lddw(inst, ops[1]);
        return;
    case op_kind::ldx:
    case op_kind::ldsx: {
        inst.dst = reg(ops[0]);
        auto [src, offset] = memory(ops[1]);
        inst.src = src;
        inst.offset = offset;
        break;
    }
    case op_kind::st:
    case op_kind::stx:
    case op_kind::atomic: {
        auto [dst, offset] = memory(ops[ops.size() - 2]);
        inst.dst = dst;
        inst.offset = offset;
        if (row->src == src_rule::read) {
            inst.src = reg(ops.back());
        } else {
            inst.imm = imm32(ops.back());
        }
        if (row->kind == op_kind::atomic) {
            std::string_view op = ops[0];
            bool narrow = op.ends_with("32");
            auto it = std::ranges::find(atomic_ops, op.substr(0, op.size() - (narrow ? 2 : 0)),
                                        &atomic_op::name);
            if (it == std::end(atomic_ops)) {
                fail("unknown atomic operation '" + ops[0] + "' in '" + std::string(text) + "'");
            } else {
                inst.opcode = cls_stx | mode_atomic | (narrow ? size_w : size_dw);
                inst.imm = it->imm | (fetch ? atomic_fetch : 0);
            }
        }
        break;
    }
    case op_kind::ja:
        target(ops[0], inst, row->imm == imm_rule::jump);
        break;
    case op_kind::call:
        if (local) {
            inst.src = call_local;
            target(ops[0], inst, true);
        } else {
            inst.imm = imm32(ops[0]);
        }
        break;
    case op_kind::exit:
        first_exit_ = first_exit_.value_or(out_.size());
        break;
    }
    out_.push_back(inst);
}

void assembler::lddw(ebpf_inst first, std::string_view operand) {
    ebpf_inst second{};
    size_t open = operand.find('(');
    if (open == std::string_view::npos) {
        uint64_t value =
            number(operand, "immediate", uint64_t{1} << 63, std::numeric_limits<uint64_t>::max());
        first.imm = static_cast<int32_t>(static_cast<uint32_t>(value));
        second.imm = static_cast<int32_t>(static_cast<uint32_t>(value >> 32));
    } else {
        std::string_view name = operand.substr(0, open);
        std::vector<std::string> args;
        if (operand.ends_with(')')) {
            args = tokenize(operand.substr(open + 1, operand.size() - open - 2));
        }
        auto it = std::ranges::find(pseudos, name, &pseudo::name);
        if (it == std::end(pseudos) || args.size() != it->args) {
            fail("bad lddw operand '" + std::string(operand) + "'");
            return;
        }
        first.src = it->src;
        first.imm = imm32(args[0]);
        second.imm = args.size() > 1 ? imm32(args[1]) : 0;
    }
    out_.push_back(first);
    out_.push_back(second);
}

void assembler::resolve() {
    // Unless defined, the label exit names the first exit instruction.
    if (first_exit_) {
        labels_.try_emplace("exit", label{*first_exit_, 0});
    }
    for (const fixup &f : fixups_) {
        line_ = f.line;
        auto it = labels_.find(f.label);
        if (it == labels_.end()) {
            fail("undefined label " + f.label);
            return;
        }
        size_t dest = it->second.slot;
        int64_t delta = static_cast<int64_t>(dest) - static_cast<int64_t>(f.slot) - 1;
        ebpf_inst &inst = out_[f.slot];
        if (f.in_imm) {
            inst.imm = static_cast<int32_t>(delta);
        } else if (delta < std::numeric_limits<int16_t>::min() ||
                   delta > std::numeric_limits<int16_t>::max()) {
            fail("jump to " + f.label + " out of range (" + std::to_string(delta) + " slots)");
            return;
        } else {
            inst.offset = static_cast<int16_t>(delta);
        }
    }
}

uint8_t assembler::reg(std::string_view token) {
    static constexpr std::string_view names[] = {"%r0", "%r1", "%r2", "%r3", "%r4", "%r5",
                                                 "%r6", "%r7", "%r8", "%r9", "%r10"};
    static_assert(std::size(names) == register_count);
    auto it = std::ranges::find(names, token);
    if (it == std::end(names)) {
        fail("bad register " + std::string(token));
        return 0;
    }
    return static_cast<uint8_t>(it - std::begin(names));
}

// An optionally signed decimal or 0x hex number in [-negative_max, positive_max], as the
// two's complement bit pattern.
uint64_t assembler::number(std::string_view token, const std::string &what, uint64_t negative_max,
                           uint64_t positive_max) {
    std::string_view digits = token;
    bool negative = digits.starts_with('-');
    if (negative || digits.starts_with('+')) {
        digits.remove_prefix(1);
    }
    int base = 10;
    if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
        base = 16;
        digits.remove_prefix(2);
    }
    uint64_t magnitude = 0;
    const char *end = digits.data() + digits.size();
    auto [ptr, ec] = std::from_chars(digits.data(), end, magnitude, base);
    if (digits.empty() || ptr != end || ec == std::errc::invalid_argument) {
        fail("bad " + what + " '" + std::string(token) + "'");
        return 0;
    }
    if (ec == std::errc::result_out_of_range ||
        magnitude > (negative ? negative_max : positive_max)) {
        fail(what + " out of range: " + std::string(token));
        return 0;
    }
    return negative ? 0 - magnitude : magnitude;
}

assembler::memory_operand assembler::memory(std::string_view token) {
    if (token.size() < 3 || !token.starts_with('[') || !token.ends_with(']')) {
        fail("bad memory operand '" + std::string(token) + "'");
        return {};
    }
    std::string_view inner = token.substr(1, token.size() - 2);
    size_t sign = inner.find_first_of("+-");
    memory_operand m{.reg = reg(inner.substr(0, sign))};
    if (sign != std::string_view::npos) {
        m.offset = static_cast<int16_t>(number(inner.substr(sign), "offset", 0x8000, 0x7fff));
    }
    return m;
}

// A label, or `+N` / `-N` slots from the next instruction, into offset or imm.
void assembler::target(std::string_view token, ebpf_inst &inst, bool in_imm) {
    if (token.starts_with('+') || token.starts_with('-')) {
        uint64_t limit = in_imm ? 0x8000'0000 : 0x8000;
        uint64_t value = number(token, "jump offset", limit, limit - 1);
        if (in_imm) {
            inst.imm = static_cast<int32_t>(value);
        } else {
            inst.offset = static_cast<int16_t>(value);
        }
    } else {
        fixups_.push_back({out_.size(), std::string(token), line_, in_imm});
    }
}

} // namespace

result<std::vector<ebpf_inst>> assemble(std::string_view text) {
    return assembler{}.run(text);
}

} // namespace bpftime::vm
