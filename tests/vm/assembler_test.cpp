// SPDX-License-Identifier: MIT
// Tests of the assembler and the disassembler.
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/disassembler.hpp>

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace bpftime::vm {
namespace {

struct fields {
    int opcode, dst, src, offset, imm;
    bool operator==(const fields &) const = default;
};

fields of(const ebpf_inst &inst) {
    return {inst.opcode, inst.dst, inst.src, inst.offset, inst.imm};
}

std::ostream &operator<<(std::ostream &os, const fields &f) {
    return os << "{op=0x" << std::hex << f.opcode << std::dec << " dst=" << f.dst
              << " src=" << f.src << " off=" << f.offset << " imm=" << f.imm << "}";
}

ebpf_inst make(int opcode, int dst, int src, int offset, int32_t imm) {
    ebpf_inst inst{
        .opcode = static_cast<uint8_t>(opcode), .offset = static_cast<int16_t>(offset), .imm = imm};
    inst.dst = static_cast<uint8_t>(dst);
    inst.src = static_cast<uint8_t>(src);
    return inst;
}

std::vector<uint64_t> words(std::span<const ebpf_inst> insns) {
    std::vector<uint64_t> out;
    for (const ebpf_inst &inst : insns) {
        out.push_back(std::bit_cast<uint64_t>(inst));
    }
    return out;
}

// Assembles text that must be valid.
std::vector<ebpf_inst> asm_ok(std::string_view text) {
    auto r = assemble(text);
    EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.err().message);
    return r.ok() ? *r : std::vector<ebpf_inst>{};
}

// Assembles one instruction and returns its fields.
fields one(std::string_view text) {
    std::vector<ebpf_inst> insns = asm_ok(text);
    EXPECT_EQ(insns.size(), 1u) << text;
    return insns.empty() ? fields{-1, -1, -1, -1, -1} : of(insns[0]);
}

// The error message of text that must be refused.
std::string asm_error(std::string_view text) {
    result<std::vector<ebpf_inst>> r = assemble(text);
    EXPECT_FALSE(r.ok()) << text;
    if (r.ok()) {
        return {};
    }
    EXPECT_EQ(r.err().code, EINVAL);
    return r.err().message;
}

// disassemble -> assemble must give back the same bytes.
void expect_round_trip(std::span<const ebpf_inst> insns, const std::string &context) {
    std::string text = disassemble(insns);
    auto again = assemble(text);
    ASSERT_TRUE(again.ok()) << context << "\n" << text << again.err().message;
    EXPECT_EQ(words(*again), words(insns)) << context << "\n" << text;
}

// ---- encoding ----

TEST(Assembler, AluEveryOperationWidthAndSource) {
    struct op {
        const char *name;
        uint8_t code;
    };
    const op ops[] = {{"add", alu_add}, {"sub", alu_sub}, {"mul", alu_mul}, {"div", alu_div},
                      {"or", alu_or},   {"and", alu_and}, {"lsh", alu_lsh}, {"rsh", alu_rsh},
                      {"mod", alu_mod}, {"xor", alu_xor}, {"mov", alu_mov}, {"arsh", alu_arsh}};
    for (const op &o : ops) {
        std::string n = o.name;
        EXPECT_EQ(one(n + " %r1, 5"), (fields{cls_alu64 | src_k | o.code, 1, 0, 0, 5})) << n;
        EXPECT_EQ(one(n + " %r9, %r10"), (fields{cls_alu64 | src_x | o.code, 9, 10, 0, 0})) << n;
        EXPECT_EQ(one(n + "32 %r0, -7"), (fields{cls_alu | src_k | o.code, 0, 0, 0, -7})) << n;
        EXPECT_EQ(one(n + "32 %r3, %r4"), (fields{cls_alu | src_x | o.code, 3, 4, 0, 0})) << n;
    }
}

TEST(Assembler, NegSignedDivModAndMovsx) {
    EXPECT_EQ(one("neg %r2"), (fields{0x87, 2, 0, 0, 0}));
    EXPECT_EQ(one("neg32 %r2"), (fields{0x84, 2, 0, 0, 0}));
    EXPECT_EQ(one("sdiv %r0, 3"), (fields{0x37, 0, 0, 1, 3}));
    EXPECT_EQ(one("sdiv32 %r0, %r1"), (fields{0x3c, 0, 1, 1, 0}));
    EXPECT_EQ(one("smod %r0, %r1"), (fields{0x9f, 0, 1, 1, 0}));
    EXPECT_EQ(one("smod32 %r0, -3"), (fields{0x94, 0, 0, 1, -3}));
    EXPECT_EQ(one("movsx832 %r0, %r1"), (fields{0xbc, 0, 1, 8, 0}));
    EXPECT_EQ(one("movsx1632 %r0, %r1"), (fields{0xbc, 0, 1, 16, 0}));
    EXPECT_EQ(one("movsx864 %r0, %r1"), (fields{0xbf, 0, 1, 8, 0}));
    EXPECT_EQ(one("movsx1664 %r0, %r1"), (fields{0xbf, 0, 1, 16, 0}));
    EXPECT_EQ(one("movsx3264 %r0, %r1"), (fields{0xbf, 0, 1, 32, 0}));
}

TEST(Assembler, Endian) {
    struct form {
        const char *prefix;
        int opcode;
    };
    for (form f : {form{"le", 0xd4}, {"be", 0xdc}, {"bswap", 0xd7}, {"swap", 0xd7}}) {
        for (int width : {16, 32, 64}) {
            std::string text = f.prefix + std::to_string(width) + " %r3";
            EXPECT_EQ(one(text), (fields{f.opcode, 3, 0, 0, width})) << text;
        }
    }
}

TEST(Assembler, Immediates) {
    EXPECT_EQ(one("mov %r0, 0xAbC").imm, 0xabc);
    EXPECT_EQ(one("mov %r0, 0XFF").imm, 0xff);
    EXPECT_EQ(one("mov %r0, 0xffffffff").imm, -1);
    EXPECT_EQ(one("mov %r0, 0x80000000").imm, INT32_MIN);
    EXPECT_EQ(one("mov %r0, -2147483648").imm, INT32_MIN);
    EXPECT_EQ(one("mov %r0, 4294967295").imm, -1);
    EXPECT_EQ(one("mov %r0, -0x10").imm, -16);
    EXPECT_EQ(one("mov %r0, 0").imm, 0);
}

TEST(Assembler, Lddw) {
    auto check = [](std::string_view text, std::vector<fields> want) {
        std::vector<ebpf_inst> insns = asm_ok(text);
        ASSERT_EQ(insns.size(), want.size()) << text;
        for (size_t i = 0; i < insns.size(); i++) {
            EXPECT_EQ(of(insns[i]), want[i]) << text << " slot " << i;
        }
    };
    check("lddw %r0, 0x1122334455667788", {{0x18, 0, 0, 0, 0x55667788}, {0, 0, 0, 0, 0x11223344}});
    check("lddw %r1, 0xFFFFFFFF80000000", {{0x18, 1, 0, 0, INT32_MIN}, {0, 0, 0, 0, -1}});
    check("lddw %r1, 0xffffffffffffffff", {{0x18, 1, 0, 0, -1}, {0, 0, 0, 0, -1}});
    check("lddw %r2, -1", {{0x18, 2, 0, 0, -1}, {0, 0, 0, 0, -1}});
    check("lddw %r0, 2147483648", {{0x18, 0, 0, 0, INT32_MIN}, {0, 0, 0, 0, 0}});
    check("lddw %r0, -9223372036854775808", {{0x18, 0, 0, 0, 0}, {0, 0, 0, 0, INT32_MIN}});
    check("lddw %r1, map_fd(3)", {{0x18, 1, 1, 0, 3}, {0, 0, 0, 0, 0}});
    check("lddw %r1, map_value(3, 16)", {{0x18, 1, 2, 0, 3}, {0, 0, 0, 0, 16}});
    check("lddw %r1, map_value(3,0x10)", {{0x18, 1, 2, 0, 3}, {0, 0, 0, 0, 16}});
    check("lddw %r2, var_addr(7)", {{0x18, 2, 3, 0, 7}, {0, 0, 0, 0, 0}});
    check("lddw %r3, code_addr(8)", {{0x18, 3, 4, 0, 8}, {0, 0, 0, 0, 0}});
    check("lddw %r4, map_idx(0)", {{0x18, 4, 5, 0, 0}, {0, 0, 0, 0, 0}});
    check("lddw %r5, map_idx_value(1, -4)", {{0x18, 5, 6, 0, 1}, {0, 0, 0, 0, -4}});
}

TEST(Assembler, LoadsAndStores) {
    struct form {
        const char *name;
        int opcode;
    };
    for (form f : {form{"ldxb", 0x71},
                   {"ldxh", 0x69},
                   {"ldxw", 0x61},
                   {"ldxdw", 0x79},
                   {"ldxsb", 0x91},
                   {"ldxsh", 0x89},
                   {"ldxsw", 0x81}}) {
        EXPECT_EQ(one(std::string(f.name) + " %r0, [%r1+2]"), (fields{f.opcode, 0, 1, 2, 0}));
    }
    for (form f : {form{"stb", 0x72}, {"sth", 0x6a}, {"stw", 0x62}, {"stdw", 0x7a}}) {
        EXPECT_EQ(one(std::string(f.name) + " [%r10-8], -5"), (fields{f.opcode, 10, 0, -8, -5}));
    }
    for (form f : {form{"stxb", 0x73}, {"stxh", 0x6b}, {"stxw", 0x63}, {"stxdw", 0x7b}}) {
        EXPECT_EQ(one(std::string(f.name) + " [%r1], %r2"), (fields{f.opcode, 1, 2, 0, 0}));
    }
    EXPECT_EQ(one("ldxw %r0, [%r1+0x10]"), (fields{0x61, 0, 1, 16, 0}));
    EXPECT_EQ(one("ldxw %r0, [%r1-0x8000]"), (fields{0x61, 0, 1, -32768, 0}));
    EXPECT_EQ(one("ldxw %r0, [%r1+32767]"), (fields{0x61, 0, 1, 32767, 0}));
    EXPECT_EQ(one("ldxw %r0, [ %r1 + 4 ]"), (fields{0x61, 0, 1, 4, 0}));
}

TEST(Assembler, Atomics) {
    struct form {
        const char *op;
        int32_t imm;
    };
    for (form f :
         {form{"add", atomic_add}, {"or", atomic_or}, {"and", atomic_and}, {"xor", atomic_xor}}) {
        std::string op = f.op;
        EXPECT_EQ(one("lock " + op + " [%r10-8], %r1"), (fields{0xdb, 10, 1, -8, f.imm}));
        EXPECT_EQ(one("lock " + op + "32 [%r1+4], %r2"), (fields{0xc3, 1, 2, 4, f.imm}));
        EXPECT_EQ(one("lock fetch " + op + " [%r1], %r2"),
                  (fields{0xdb, 1, 2, 0, f.imm | atomic_fetch}));
        EXPECT_EQ(one("lock fetch " + op + "32 [%r1], %r2"),
                  (fields{0xc3, 1, 2, 0, f.imm | atomic_fetch}));
    }
    EXPECT_EQ(one("lock xchg [%r1], %r2"), (fields{0xdb, 1, 2, 0, atomic_xchg}));
    EXPECT_EQ(one("lock xchg32 [%r1], %r2"), (fields{0xc3, 1, 2, 0, atomic_xchg}));
    EXPECT_EQ(one("lock cmpxchg [%r10-8], %r1"), (fields{0xdb, 10, 1, -8, atomic_cmpxchg}));
    EXPECT_EQ(one("lock cmpxchg32 [%r1], %r2"), (fields{0xc3, 1, 2, 0, atomic_cmpxchg}));
}

TEST(Assembler, Jumps) {
    EXPECT_EQ(one("ja +3"), (fields{0x05, 0, 0, 3, 0}));
    EXPECT_EQ(one("ja -1"), (fields{0x05, 0, 0, -1, 0}));
    EXPECT_EQ(one("ja32 +5"), (fields{0x06, 0, 0, 0, 5}));
    EXPECT_EQ(one("ja32 -100000"), (fields{0x06, 0, 0, 0, -100000}));
    struct form {
        const char *name;
        uint8_t code;
    };
    const form ops[] = {{"jeq", jmp_jeq},   {"jgt", jmp_jgt},  {"jge", jmp_jge},
                        {"jset", jmp_jset}, {"jne", jmp_jne},  {"jsgt", jmp_jsgt},
                        {"jsge", jmp_jsge}, {"jlt", jmp_jlt},  {"jle", jmp_jle},
                        {"jslt", jmp_jslt}, {"jsle", jmp_jsle}};
    for (const form &f : ops) {
        std::string n = f.name;
        EXPECT_EQ(one(n + " %r1, 5, +2"), (fields{cls_jmp | src_k | f.code, 1, 0, 2, 5})) << n;
        EXPECT_EQ(one(n + " %r1, %r2, -2"), (fields{cls_jmp | src_x | f.code, 1, 2, -2, 0})) << n;
        EXPECT_EQ(one(n + "32 %r3, 0xb, +0"), (fields{cls_jmp32 | src_k | f.code, 3, 0, 0, 11}))
            << n;
        EXPECT_EQ(one(n + "32 %r3, %r10, +7"), (fields{cls_jmp32 | src_x | f.code, 3, 10, 7, 0}))
            << n;
    }
}

TEST(Assembler, CallAndExit) {
    EXPECT_EQ(one("call 5"), (fields{0x85, 0, 0, 0, 5}));
    EXPECT_EQ(one("call helper 5"), (fields{0x85, 0, 0, 0, 5}));
    EXPECT_EQ(one("call 0xffffffff"), (fields{0x85, 0, 0, 0, -1}));
    EXPECT_EQ(one("call %r2"), (fields{0x8d, 2, 0, 0, 0}));
    EXPECT_EQ(one("call local +3"), (fields{0x85, 0, 1, 0, 3}));
    EXPECT_EQ(one("call local -1"), (fields{0x85, 0, 1, 0, -1}));
    EXPECT_EQ(one("exit"), (fields{0x95, 0, 0, 0, 0}));
}

TEST(Assembler, WhitespaceCommentsAndSeparators) {
    std::vector<ebpf_inst> insns = asm_ok("# header\n"
                                          "\n"
                                          "   mov32 %r0, 1   # trailing\n"
                                          "\tadd %r1,%r2\r\n"
                                          "  \t  \n"
                                          "add\t%r1 ,  3\n"
                                          "#exit\n"
                                          "exit#done");
    ASSERT_EQ(insns.size(), 4u);
    EXPECT_EQ(of(insns[0]), (fields{0xb4, 0, 0, 0, 1}));
    EXPECT_EQ(of(insns[1]), (fields{0x0f, 1, 2, 0, 0}));
    EXPECT_EQ(of(insns[2]), (fields{0x07, 1, 0, 0, 3}));
    EXPECT_EQ(of(insns[3]), (fields{0x95, 0, 0, 0, 0}));
    EXPECT_TRUE(asm_ok("").empty());
    EXPECT_TRUE(asm_ok("# only a comment\n\n").empty());
}

TEST(Assembler, WritesAreEncodedAsWritten) {
    // Semantic rules (such as r10 being read-only) are the validator's job.
    EXPECT_EQ(one("mov %r10, 1"), (fields{0xb7, 10, 0, 0, 1}));
    EXPECT_EQ(one("ldxdw %r10, [%r10-8]"), (fields{0x79, 10, 10, -8, 0}));
}

// ---- labels ----

TEST(Assembler, LabelsForwardAndBackward) {
    std::vector<ebpf_inst> insns = asm_ok("start:\n"
                                          "  mov %r0, 0\n"  // 0
                                          "  ja forward\n"  // 1 -> 4
                                          "  lddw %r1, 1\n" // 2, 3
                                          "forward:\n"
                                          "  jeq %r0, 1, start\n" // 4 -> 0
                                          "  ja32 forward\n"      // 5 -> 4
                                          "  call local func\n"   // 6 -> 8
                                          "  exit\n"              // 7
                                          "func:\n"
                                          "  exit\n" // 8
                                          "end:\n"
                                          "  # a label may name the slot after the last\n");
    ASSERT_EQ(insns.size(), 9u);
    EXPECT_EQ(insns[1].offset, 2);
    EXPECT_EQ(insns[4].offset, -5);
    EXPECT_EQ(insns[5].imm, -2);
    EXPECT_EQ(of(insns[6]), (fields{0x85, 0, 1, 0, 1}));
    EXPECT_EQ(asm_ok("ja end\nend:")[0].offset, 0);
    EXPECT_EQ(asm_ok("ja self\nself:\nja self")[1].offset, -1);
}

TEST(Assembler, ExitLabelIsTheFirstExit) {
    // Forward: the first exit is after the jump.
    std::vector<ebpf_inst> insns = asm_ok("jeq %r1, 0xb, exit\nmov %r0, 1\nexit\nmov %r0, 2\nexit");
    EXPECT_EQ(insns[0].offset, 1);
    // Backward: the first exit is before the jump, not the next one.
    insns = asm_ok("ja +1\nexit\njne %r0, 0, exit\nexit");
    EXPECT_EQ(insns[2].offset, -2);
    // A defined label named exit wins.
    insns = asm_ok("ja exit\nexit\nexit:\nexit");
    EXPECT_EQ(insns[0].offset, 1);
    // Without any exit instruction the label is undefined.
    EXPECT_EQ(asm_error("mov %r0, 0\nja exit"), "line 2: undefined label exit");
}

// ---- errors ----

TEST(AssemblerErrors, NameTheLine) {
    EXPECT_EQ(asm_error("mov %r0, 1\nfrob %r1, 2"),
              "line 2: unknown mnemonic 'frob' in 'frob %r1, 2'");
    EXPECT_EQ(asm_error("\n\nmov %r11, 1"), "line 3: bad register %r11");
    EXPECT_EQ(asm_error("ldxw %r0, [%r12+1]"), "line 1: bad register %r12");
    EXPECT_EQ(asm_error("mov r1, 1"), "line 1: bad register r1");
    EXPECT_EQ(asm_error("exit\nja nowhere"), "line 2: undefined label nowhere");
    EXPECT_EQ(asm_error("a:\nexit\n\na:\nexit"),
              "line 4: duplicate label a (first defined on line 1)");
    EXPECT_EQ(asm_error("add %r1"), "line 1: wrong number of operands in 'add %r1'");
}

TEST(AssemblerErrors, WrongOperandCount) {
    for (const char *text :
         {"add %r1, 2, 3", "neg %r1, %r2", "le16", "exit %r0", "ja", "jeq %r1, 2", "call",
          "call local", "lddw %r0", "ldxw %r0", "stw [%r1]", "stxw [%r1], %r2, %r3",
          "lock add [%r1]", "lock fetch add [%r1], %r2, %r3", "lock", "call %r1, %r2"}) {
        std::string message = asm_error(text);
        EXPECT_NE(message.find("line 1: wrong number of operands"), std::string::npos)
            << text << " -> " << message;
        EXPECT_NE(message.find(text), std::string::npos) << message;
    }
}

TEST(AssemblerErrors, UnknownMnemonics) {
    for (const char *text : {"le %r1", "bswap %r1", "le8 %r1", "ldabsw 1", "movsx %r0, %r1",
                             "addd %r1, 1", "lock add32x [%r1], %r2", "L: exit"}) {
        std::string message = asm_error(text);
        EXPECT_TRUE(message.starts_with("line 1: unknown")) << text << " -> " << message;
    }
}

TEST(AssemblerErrors, RangesAndNumbers) {
    EXPECT_EQ(asm_error("mov %r0, 0x100000000"), "line 1: immediate out of range: 0x100000000");
    EXPECT_EQ(asm_error("mov %r0, 4294967296"), "line 1: immediate out of range: 4294967296");
    EXPECT_EQ(asm_error("mov %r0, -2147483649"), "line 1: immediate out of range: -2147483649");
    EXPECT_EQ(asm_error("lddw %r0, 0x10000000000000000"),
              "line 1: immediate out of range: 0x10000000000000000");
    EXPECT_EQ(asm_error("lddw %r0, -9223372036854775809"),
              "line 1: immediate out of range: -9223372036854775809");
    EXPECT_EQ(asm_error("ldxw %r0, [%r1+32768]"), "line 1: offset out of range: +32768");
    EXPECT_EQ(asm_error("stw [%r1-0x8001], 1"), "line 1: offset out of range: -0x8001");
    EXPECT_EQ(asm_error("ja +32768"), "line 1: jump offset out of range: +32768");
    EXPECT_EQ(asm_error("ja32 +0x80000000"), "line 1: jump offset out of range: +0x80000000");
    EXPECT_EQ(asm_error("mov %r0, 12x"), "line 1: bad immediate '12x'");
    EXPECT_EQ(asm_error("mov %r0, 0x"), "line 1: bad immediate '0x'");
    EXPECT_EQ(asm_error("mov %r0, --1"), "line 1: bad immediate '--1'");
    EXPECT_EQ(asm_error("ldxw %r0, [%r1+x]"), "line 1: bad offset '+x'");
    EXPECT_EQ(asm_error("ldxw %r0, %r1"), "line 1: bad memory operand '%r1'");
    EXPECT_EQ(asm_error("lddw %r0, map_fd(1, 2)"), "line 1: bad lddw operand 'map_fd(1,2)'");
    EXPECT_EQ(asm_error("lddw %r0, map_value(1)"), "line 1: bad lddw operand 'map_value(1)'");
    EXPECT_EQ(asm_error("lddw %r0, nope(1)"), "line 1: bad lddw operand 'nope(1)'");
    EXPECT_EQ(asm_error("movsx832 %r0, 5"), "line 1: movsx832 needs a register source in "
                                            "'movsx832 %r0, 5'");
    EXPECT_EQ(asm_error("lock nand [%r1], %r2"),
              "line 1: unknown atomic operation 'nand' in 'lock nand [%r1], %r2'");
    EXPECT_EQ(asm_error("bad label:"), "line 1: bad label 'bad label:'");
}

TEST(AssemblerErrors, JumpToLabelOutOfRange) {
    std::string text = "ja far\n";
    for (int i = 0; i < 32768 / 2; i++) {
        text += "lddw %r0, 1\n";
    }
    text += "far:\nexit\n";
    EXPECT_EQ(asm_error(text), "line 1: jump to far out of range (32768 slots)");
    // ja32 and local calls reach further.
    text.replace(0, 2, "ja32");
    EXPECT_EQ(asm_ok(text)[0].imm, 32768);
}

TEST(AssemblerErrors, GarbageNeverThrows) {
    for (const char *text : {"[", "]", "(", ")", ",", ":", "%", "lddw %r0, (", "lddw %r0, map_fd(",
                             "ldxw %r0, []", "ldxw %r0, [", "stw ], 1", "lock fetch", "call local",
                             "jeq %r1, %r2, +", "ja -", "\xff\xfe", "mov %r0, -", ", ,"}) {
        EXPECT_NO_THROW((void)assemble(text)) << text;
        EXPECT_FALSE(assemble(text).ok()) << text;
    }
}

// ---- disassembly ----

TEST(Disassembler, Text) {
    struct example {
        ebpf_inst inst;
        const char *text;
    };
    const example examples[] = {
        {make(0xb7, 1, 0, 0, 5), "mov %r1, 5"},
        {make(0xbc, 1, 2, 0, 0), "mov32 %r1, %r2"},
        {make(0x37, 0, 0, 1, -3), "sdiv %r0, -3"},
        {make(0x9c, 0, 1, 1, 0), "smod32 %r0, %r1"},
        {make(0xbc, 0, 1, 16, 0), "movsx1632 %r0, %r1"},
        {make(0xbf, 0, 1, 32, 0), "movsx3264 %r0, %r1"},
        {make(0x87, 4, 0, 0, 0), "neg %r4"},
        {make(0xdc, 3, 0, 0, 32), "be32 %r3"},
        {make(0xd7, 3, 0, 0, 64), "bswap64 %r3"},
        {make(0x61, 0, 1, 2, 0), "ldxw %r0, [%r1+2]"},
        {make(0x91, 0, 1, -1, 0), "ldxsb %r0, [%r1-1]"},
        {make(0x62, 10, 0, -8, 5), "stw [%r10-8], 5"},
        {make(0x73, 1, 2, 0, 0), "stxb [%r1], %r2"},
        {make(0xdb, 10, 1, -8, atomic_add), "lock add [%r10-8], %r1"},
        {make(0xc3, 1, 2, 4, atomic_xor | atomic_fetch), "lock fetch xor32 [%r1+4], %r2"},
        {make(0xdb, 1, 2, 0, atomic_cmpxchg), "lock cmpxchg [%r1], %r2"},
        {make(0xc3, 1, 2, 0, atomic_xchg), "lock xchg32 [%r1], %r2"},
        {make(0x05, 0, 0, 3, 0), "ja +3"},
        {make(0x05, 0, 0, 0, 0), "ja +0"},
        {make(0x06, 0, 0, 0, 5), "ja32 +5"},
        {make(0x15, 1, 0, -2, 5), "jeq %r1, 5, -2"},
        {make(0xce, 1, 2, 4, 0), "jslt32 %r1, %r2, +4"},
        {make(0x85, 0, 0, 0, 5), "call 5"},
        {make(0x85, 0, 1, 0, 3), "call local +3"},
        {make(0x8d, 2, 0, 0, 0), "call %r2"},
        {make(0x95, 0, 0, 0, 0), "exit"},
        // Immediates: decimal within +-65536, hex of the 32-bit pattern beyond.
        {make(0xb7, 0, 0, 0, 65536), "mov %r0, 65536"},
        {make(0xb7, 0, 0, 0, -65536), "mov %r0, -65536"},
        {make(0xb7, 0, 0, 0, 65537), "mov %r0, 0x10001"},
        {make(0xb7, 0, 0, 0, -65537), "mov %r0, 0xfffeffff"},
        {make(0xb7, 0, 0, 0, INT32_MIN), "mov %r0, 0x80000000"},
    };
    for (const example &e : examples) {
        EXPECT_EQ(disassemble_one(std::span(&e.inst, 1), 0), e.text);
    }
}

TEST(Disassembler, Lddw) {
    auto text = [](std::vector<ebpf_inst> insns) { return disassemble_one(insns, 0); };
    EXPECT_EQ(text({make(0x18, 0, 0, 0, 0x55667788), make(0, 0, 0, 0, 0x11223344)}),
              "lddw %r0, 0x1122334455667788");
    EXPECT_EQ(text({make(0x18, 1, 0, 0, INT32_MIN), make(0, 0, 0, 0, -1)}),
              "lddw %r1, 0xffffffff80000000");
    EXPECT_EQ(text({make(0x18, 1, 0, 0, -1), make(0, 0, 0, 0, -1)}), "lddw %r1, -1");
    EXPECT_EQ(text({make(0x18, 1, 0, 0, 7), make(0, 0, 0, 0, 0)}), "lddw %r1, 7");
    EXPECT_EQ(text({make(0x18, 1, 1, 0, 3), make(0, 0, 0, 0, 0)}), "lddw %r1, map_fd(3)");
    EXPECT_EQ(text({make(0x18, 1, 2, 0, 3), make(0, 0, 0, 0, 16)}), "lddw %r1, map_value(3, 16)");
    EXPECT_EQ(text({make(0x18, 1, 3, 0, 3), make(0, 0, 0, 0, 0)}), "lddw %r1, var_addr(3)");
    EXPECT_EQ(text({make(0x18, 1, 4, 0, 3), make(0, 0, 0, 0, 0)}), "lddw %r1, code_addr(3)");
    EXPECT_EQ(text({make(0x18, 1, 5, 0, 3), make(0, 0, 0, 0, 0)}), "lddw %r1, map_idx(3)");
    EXPECT_EQ(text({make(0x18, 1, 6, 0, 3), make(0, 0, 0, 0, -2)}),
              "lddw %r1, map_idx_value(3, -2)");
}

TEST(Disassembler, Invalid) {
    auto text = [](std::vector<ebpf_inst> insns) { return disassemble_one(insns, 0); };
    EXPECT_EQ(text({make(0xff, 1, 2, -3, 4)}), ".invalid 0xff dst=1 src=2 off=-3 imm=4");
    EXPECT_EQ(text({make(0x00, 0, 0, 0, 0)}), ".invalid 0x00 dst=0 src=0 off=0 imm=0");
    // Fields the text cannot express.
    EXPECT_TRUE(text({make(0xb7, 11, 0, 0, 0)}).starts_with(".invalid 0xb7")); // dst r11
    EXPECT_TRUE(text({make(0xbf, 1, 15, 0, 0)}).starts_with(".invalid"));      // src r15
    EXPECT_TRUE(text({make(0xb7, 1, 1, 0, 0)}).starts_with(".invalid"));       // src in K form
    EXPECT_TRUE(text({make(0xbf, 1, 1, 0, 5)}).starts_with(".invalid"));       // imm in X form
    EXPECT_TRUE(text({make(0x07, 1, 0, 1, 5)}).starts_with(".invalid"));       // add with offset
    EXPECT_TRUE(text({make(0x37, 1, 0, 2, 5)}).starts_with(".invalid"));       // div offset 2
    EXPECT_TRUE(text({make(0xbc, 1, 2, 32, 0)}).starts_with(".invalid"));      // movsx3232
    EXPECT_TRUE(text({make(0xd4, 1, 0, 0, 8)}).starts_with(".invalid"));       // le8
    EXPECT_TRUE(text({make(0xdb, 1, 2, 0, 0x02)}).starts_with(".invalid"));    // atomic op
    EXPECT_TRUE(text({make(0xdb, 1, 2, 0, 0xe0)}).starts_with(".invalid"));    // xchg w/o fetch
    EXPECT_TRUE(text({make(0x85, 0, 2, 0, 1)}).starts_with(".invalid"));       // BTF call
    EXPECT_TRUE(text({make(0x95, 1, 0, 0, 0)}).starts_with(".invalid"));       // exit dst
    EXPECT_TRUE(text({make(0x20, 0, 0, 0, 1)}).starts_with(".invalid"));       // ldabsw
    EXPECT_TRUE(text({make(0x18, 1, 7, 0, 0), make(0, 0, 0, 0, 0)}).starts_with(".invalid"));
    EXPECT_TRUE(text({make(0x18, 1, 1, 0, 3), make(0, 0, 0, 0, 1)}).starts_with(".invalid"));
    EXPECT_TRUE(text({make(0x18, 1, 0, 0, 3), make(0x18, 0, 0, 0, 1)}).starts_with(".invalid"));
    EXPECT_TRUE(text({make(0x18, 1, 0, 2, 3), make(0, 0, 0, 0, 1)}).starts_with(".invalid"));
    // Truncated lddw at the end of the program, and positions past the end.
    EXPECT_EQ(text({make(0x18, 1, 0, 0, 3)}), ".invalid 0x18 dst=1 src=0 off=0 imm=3");
    std::vector<ebpf_inst> empty;
    EXPECT_EQ(disassemble_one(empty, 0), "");
    EXPECT_EQ(disassemble(empty), "");
}

TEST(Disassembler, ProgramListing) {
    std::vector<ebpf_inst> insns = asm_ok("lddw %r0, 0x100000002\nja +1\nmov %r0, 1\nexit");
    EXPECT_EQ(disassemble(insns), "lddw %r0, 0x100000002\nja +1\nmov %r0, 1\nexit\n");
    EXPECT_EQ(disassemble(insns, true),
              "   0: lddw %r0, 0x100000002\n   2: ja +1\n   3: mov %r0, 1\n   4: exit\n");
    // An undecodable lddw does not swallow the next slot.
    insns = {make(0x18, 0, 0, 0, 1), make(0x95, 0, 0, 0, 0)};
    EXPECT_EQ(disassemble(insns, true),
              "   0: .invalid 0x18 dst=0 src=0 off=0 imm=1\n   1: exit\n");
    insns = {make(0x95, 0, 0, 0, 0), make(0x18, 0, 0, 0, 1)};
    EXPECT_EQ(disassemble(insns), "exit\n.invalid 0x18 dst=0 src=0 off=0 imm=1\n");
}

// ---- round trips ----

std::string asm_section(const std::filesystem::path &file) {
    std::ifstream in(file);
    std::string line, text;
    bool inside = false;
    bool found = false;
    while (std::getline(in, line)) {
        if (line.starts_with("-- ")) {
            inside = line.starts_with("-- asm");
            found = found || inside;
        } else if (inside) {
            text += line + "\n";
        }
    }
    return found ? text : std::string();
}

TEST(RoundTrip, ConformanceFiles) {
    std::filesystem::path dir = std::filesystem::path(BPFTIME_SHARED_DIR) / "conformance/tests";
    if (!std::filesystem::is_directory(dir)) {
        GTEST_SKIP() << dir << " is absent";
    }
    size_t programs = 0;
    for (const auto &entry : std::filesystem::directory_iterator(dir)) {
        if (entry.path().extension() != ".data") {
            continue;
        }
        std::string text = asm_section(entry.path());
        if (text.empty()) {
            continue;
        }
        auto insns = assemble(text);
        ASSERT_TRUE(insns.ok()) << entry.path() << ": " << insns.err().message;
        ASSERT_FALSE(insns->empty()) << entry.path();
        expect_round_trip(*insns, entry.path().string());
        programs++;
    }
    EXPECT_GT(programs, 200u);
}

// Legal values of each field per the table's rules.
std::vector<int> dst_values(dst_rule rule) {
    return rule == dst_rule::zero ? std::vector{0} : std::vector{0, 1, 10};
}
std::vector<int> src_values(src_rule rule) {
    switch (rule) {
    case src_rule::zero:
        return {0};
    case src_rule::read:
        return {0, 5, 10};
    case src_rule::lddw:
        return {0, 1, 2, 3, 4, 5, 6};
    case src_rule::call:
        return {call_helper, call_local};
    }
    return {};
}
std::vector<int> off_values(off_rule rule) {
    switch (rule) {
    case off_rule::zero:
        return {0};
    case off_rule::memory:
    case off_rule::jump:
        return {0, 1, -8, 32767, -32768};
    case off_rule::divmod:
        return {0, 1};
    case off_rule::movsx32:
        return {0, 8, 16};
    case off_rule::movsx64:
        return {0, 8, 16, 32};
    }
    return {};
}
std::vector<int32_t> imm_values(imm_rule rule) {
    switch (rule) {
    case imm_rule::zero:
        return {0};
    case imm_rule::any:
    case imm_rule::jump:
    case imm_rule::call:
        return {0, 1, -1, 65536, -65536, 65537, -65537, INT32_MAX, INT32_MIN};
    case imm_rule::endian:
        return {16, 32, 64};
    case imm_rule::atomic:
        return {atomic_add,  atomic_add | atomic_fetch,
                atomic_or,   atomic_or | atomic_fetch,
                atomic_and,  atomic_and | atomic_fetch,
                atomic_xor,  atomic_xor | atomic_fetch,
                atomic_xchg, atomic_cmpxchg};
    }
    return {};
}

TEST(RoundTrip, EveryLegalFormOfEveryOpcode) {
    size_t checked = 0;
    for (const opcode_info &row : opcode_table()) {
        if (row.unsupported) {
            continue;
        }
        for (int dst : dst_values(row.dst)) {
            for (int src : src_values(row.src)) {
                for (int off : off_values(row.off)) {
                    for (int32_t imm : imm_values(row.imm)) {
                        std::vector<ebpf_inst> insns{make(row.opcode, dst, src, off, imm)};
                        if (row.kind == op_kind::lddw) {
                            bool two_args = src == pseudo_map_value || src == pseudo_map_idx_value;
                            insns.push_back(make(0, 0, 0, 0, src == 0 || two_args ? ~imm : 0));
                        }
                        std::string context =
                            std::string(row.mnemonic) + " " + disassemble_one(insns, 0);
                        EXPECT_FALSE(context.find(".invalid") != std::string::npos) << context;
                        expect_round_trip(insns, context);
                        checked++;
                    }
                }
            }
        }
    }
    EXPECT_GT(checked, 1000u);
}

// Random instructions, mostly of known opcodes with plausible fields: each either prints as
// .invalid or assembles back to the same bytes.
TEST(RoundTrip, RandomInstructions) {
    std::mt19937 rng(12345);
    auto pick = [&](std::initializer_list<int> values) {
        return *(values.begin() + rng() % values.size());
    };
    std::span<const opcode_info> table = opcode_table();
    size_t valid = 0;
    for (int i = 0; i < 20000; i++) {
        int opcode =
            rng() % 4 == 0 ? static_cast<int>(rng() % 256) : table[rng() % table.size()].opcode;
        int32_t imm = rng() % 4 == 0 ? static_cast<int32_t>(rng())
                                     : pick({0, 0, 1, 16, 32, 64, -1, 0xe1, 0xf1, 0x41, 65537});
        std::vector<ebpf_inst> insns{make(opcode, pick({0, 0, 1, 10, 11, 15}),
                                          pick({0, 0, 1, 2, 6, 7, 10, 15}),
                                          pick({0, 0, 0, 1, 8, 16, 32, -1, 0x7fff, -0x8000}), imm)};
        if (rng() % 2) {
            insns.push_back(make(pick({0, 0, 0, 0x95}), pick({0, 0, 0, 1}), 0, 0, pick({0, 5})));
        }
        std::string text = disassemble(insns);
        if (text.find(".invalid") == std::string::npos) {
            expect_round_trip(insns, text);
            valid++;
        }
    }
    EXPECT_GT(valid, 500u);
}

} // namespace
} // namespace bpftime::vm
