// SPDX-License-Identifier: MIT
// USDT probes: the notes of this test binary's own <sys/sdt.h> probes, their semaphore where
// this process has it, argument specs in every form libbpf reads, and every refusal.
#define _SDT_HAS_SEMAPHORES 1
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/usdt.hpp>

#include <gtest/gtest.h>
#include <sys/sdt.h>

#include <cstddef>
#include <string>
#include <vector>

extern "C" {
__extension__ unsigned short bpftime_attach_test_pair_semaphore __attribute__((unused))
__attribute__((section(".probes")));
__extension__ unsigned short bpftime_attach_test_none_semaphore __attribute__((unused))
__attribute__((section(".probes")));

__attribute__((noinline, used)) int bpftime_usdt_test_function(int a, long b) {
    STAP_PROBE2(bpftime_attach_test, pair, a, b);
    STAP_PROBE(bpftime_attach_test, none);
    return a + static_cast<int>(b);
}
}

namespace bpftime {
namespace {

const std::string self = "/proc/self/exe";

usdt_arg_spec one(const std::string &text) {
    auto spec = parse_usdt_args(text);
    EXPECT_TRUE(spec.ok()) << text << ": " << (spec.ok() ? "" : spec.err().message);
    EXPECT_EQ(spec.ok() ? spec->arg_cnt : -1, 1);
    return spec.ok() ? spec->args[0] : usdt_arg_spec{};
}

std::string refusal(const std::string &text) {
    auto spec = parse_usdt_args(text);
    EXPECT_FALSE(spec.ok()) << text << " should have been refused";
    return spec.ok() ? "" : spec.err().message;
}

TEST(UsdtArgs, RegistersByEveryWidth) {
    usdt_arg_spec a = one("-4@%edi");
    EXPECT_EQ(a.arg_type, usdt_arg_reg);
    EXPECT_EQ(a.reg_off, 112); // pt_regs.di
    EXPECT_TRUE(a.arg_signed);
    EXPECT_EQ(a.arg_bitshift, 32);
    a = one("8@%rax");
    EXPECT_EQ(a.reg_off, 80);
    EXPECT_FALSE(a.arg_signed);
    EXPECT_EQ(a.arg_bitshift, 0);
    EXPECT_EQ(one("-1@%sil").reg_off, 104);
    EXPECT_EQ(one("-1@%sil").arg_bitshift, 56);
    EXPECT_EQ(one("2@%r9w").reg_off, 64);
    EXPECT_EQ(one("1@%r15b").reg_off, 0);
    EXPECT_EQ(one("8@%rip").reg_off, 128);
    EXPECT_EQ(one("8@%rsp").reg_off, 152);
}

TEST(UsdtArgs, MemoryOperands) {
    usdt_arg_spec a = one("8@-8(%rbp)");
    EXPECT_EQ(a.arg_type, usdt_arg_reg_deref);
    EXPECT_EQ(a.reg_off, 32);
    EXPECT_EQ(static_cast<int64_t>(a.val_off), -8);
    a = one("-2@(%rdi)");
    EXPECT_EQ(a.arg_type, usdt_arg_reg_deref);
    EXPECT_EQ(a.val_off, 0u);
    EXPECT_EQ(a.arg_bitshift, 48);
    EXPECT_EQ(one("4@0x10(%r12)").val_off, 16u);
}

TEST(UsdtArgs, Constants) {
    usdt_arg_spec a = one("4@$5");
    EXPECT_EQ(a.arg_type, usdt_arg_const);
    EXPECT_EQ(a.val_off, 5u);
    a = one("2@$-536"); // (uint16_t)65000 as the assembler writes it
    EXPECT_EQ(static_cast<int64_t>(a.val_off), -536);
    EXPECT_FALSE(a.arg_signed);
    EXPECT_EQ(a.arg_bitshift, 48);
}

TEST(UsdtArgs, SeveralAndNone) {
    auto spec = parse_usdt_args("-1@%al 1@%dl -2@(%rdi) 2@$-536 -4@%ecx -8@%rsi");
    ASSERT_TRUE(spec.ok()) << spec.err().message;
    EXPECT_EQ(spec->arg_cnt, 6);
    EXPECT_EQ(spec->args[5].reg_off, 104);
    spec = parse_usdt_args("");
    ASSERT_TRUE(spec.ok());
    EXPECT_EQ(spec->arg_cnt, 0);
}

TEST(UsdtArgs, Refusals) {
    EXPECT_EQ(refusal("-4@%edi 3@%esi"), "argument 2 '3@%esi': size 3 is not 1, 2, 4 or 8 bytes");
    EXPECT_EQ(refusal("4%edi"),
              "argument 1 '4%edi': no '@' between the size and the operand (expected "
              "SIZE@OPERAND, e.g. -4@%edi)");
    EXPECT_EQ(refusal("x@%eax"), "argument 1 'x@%eax': the size 'x' is not a number (1, 2, 4 or "
                                 "8, negative when signed)");
    EXPECT_EQ(refusal("4@%xmm0"),
              "argument 1 '4@%xmm0': '%xmm0' is not a general-purpose x86-64 register");
    EXPECT_EQ(refusal("4@"), "argument 1 '4@': no operand after '@'");
    EXPECT_EQ(refusal("4@$abc"), "argument 1 '4@$abc': the constant '$abc' is not a number");
    EXPECT_EQ(refusal("4@foo(%rip)"),
              "argument 1 '4@foo(%rip)': the displacement 'foo' is not a number (symbol-relative "
              "operands are not supported)");
    EXPECT_EQ(refusal("8@(%rax,%rbx,8)"),
              "argument 1 '8@(%rax,%rbx,8)': the memory operand '(%rax,%rbx,8)' uses an index "
              "register, which libbpf's usdt.bpf.h cannot read");
    EXPECT_EQ(refusal("8@rax"), "argument 1 '8@rax': the operand 'rax' is not a register (%REG), "
                                "a constant ($N) or a memory operand (OFFSET(%REG))");
    std::string thirteen;
    for (int i = 0; i < 13; i++) {
        thirteen += "8@%rax ";
    }
    EXPECT_EQ(refusal(thirteen), "more than 12 arguments (libbpf's usdt.bpf.h reads at most 12)");
}

TEST(UsdtNotes, ThisBinarysProbes) {
    auto notes = read_usdt_notes(self);
    ASSERT_TRUE(notes.ok()) << notes.err().message;
    auto fn = resolve_uprobe_target(self + ":bpftime_usdt_test_function");
    ASSERT_TRUE(fn.ok()) << fn.err().message;
    int found = 0;
    for (const usdt_note &n : *notes) {
        if (n.provider != "bpftime_attach_test") {
            continue;
        }
        found++;
        EXPECT_TRUE(n.name == "pair" || n.name == "none") << n.name;
        EXPECT_EQ(n.args.empty(), n.name == "none") << n.args;
        EXPECT_GE(n.address, fn->address) << "the site is inside the function";
        EXPECT_LT(n.address, fn->address + fn->bytes_to_end);
        EXPECT_NE(n.semaphore, 0u);
    }
    EXPECT_EQ(found, 2);
}

TEST(UsdtNotes, SitesResolveWithTheirSemaphoreInThisProcess) {
    auto sites = resolve_usdt_target(self + ":bpftime_attach_test:pair");
    ASSERT_TRUE(sites.ok()) << sites.err().message;
    ASSERT_EQ(sites->size(), 1u);
    const usdt_site &site = sites->front();
    EXPECT_EQ(site.spec.arg_cnt, 2);
    EXPECT_TRUE(site.spec.args[0].arg_signed);
    EXPECT_EQ(site.spec.args[0].arg_bitshift, 32);
    EXPECT_EQ(site.spec.args[1].arg_bitshift, 0);
    auto loc = resolve_uprobe_target(site.uprobe_args);
    ASSERT_TRUE(loc.ok()) << loc.err().message;
    EXPECT_EQ(loc->semaphore, site.note.semaphore);
    auto sem = runtime_semaphore(*loc);
    ASSERT_TRUE(sem.ok()) << sem.err().message;
    EXPECT_EQ(*sem, &bpftime_attach_test_pair_semaphore);
}

TEST(UsdtNotes, Refusals) {
    auto r = resolve_usdt_target(self + ":bpftime_attach_test:nope");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_NE(r.err().message.find("has no USDT probe bpftime_attach_test:nope (its probes: "),
              std::string::npos)
        << r.err().message;
    EXPECT_NE(r.err().message.find("bpftime_attach_test:pair"), std::string::npos);
    r = resolve_usdt_target("/bin/sh:a:b");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("(it has no .note.stapsdt notes at all)"), std::string::npos)
        << r.err().message;
    for (const char *bad : {"nothing", "a:b", ":a:b", "x::b", "x:a:"}) {
        r = resolve_usdt_target(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.err().message,
                  std::string(bad) + ": expected BINARY:PROVIDER:NAME (all three parts non-empty)");
    }
}

TEST(UprobeSemaphore, MalformedAndOutsideTheBinary) {
    auto r = resolve_uprobe_target(self + ":bpftime_usdt_test_function(0x)");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("bad semaphore '0x'"), std::string::npos) << r.err().message;
    r = resolve_uprobe_target(self + ":bpftime_usdt_test_function(0x10");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("a semaphore is written (0xADDRESS) at the end"),
              std::string::npos)
        << r.err().message;
    r = resolve_uprobe_target(self + ":bpftime_usdt_test_function(0xffffffffff00)");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("is in no loadable segment"), std::string::npos)
        << r.err().message;
}

TEST(ReturnOverride, OnlyAtAFunctionsEntry) {
    const std::vector<vm::ebpf_inst> calls = {{vm::op_call, 0, 0, 0, 58},
                                              {vm::op_exit, 0, 0, 0, 0}};
    const std::string entry = self + ":bpftime_usdt_test_function";
    EXPECT_TRUE(check_return_override(calls, 1, attach_type_uprobe, entry).ok());
    auto r = check_return_override(calls, 1, attach_type_uretprobe, entry);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().message, "program 1 calls override_return (58), which works only in a "
                               "uprobe at a function's entry; " +
                                   entry + " is a uretprobe (the function has run by then)");
    r = check_return_override(calls, 1, attach_type_uprobe, entry + "+1");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("is a uprobe inside a function"), std::string::npos);
    // Programs that do not call it go anywhere.
    const std::vector<vm::ebpf_inst> plain = {{vm::op_exit, 0, 0, 0, 0}};
    EXPECT_TRUE(check_return_override(plain, 1, attach_type_uretprobe, entry).ok());
}

} // namespace
} // namespace bpftime
