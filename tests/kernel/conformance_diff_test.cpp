// SPDX-License-Identifier: MIT
// The kernel's eBPF against our engines on the shared conformance cases: every case the
// verifier accepts runs through BPF_PROG_TEST_RUN and on every engine variant; the kernel's
// r0 must equal the case's expected result and each engine's r0, and the input memory must
// end the same in the kernel as in each engine.
//
// The programs load as BPF_PROG_TYPE_SYSCALL (sleepable): its context is plain memory that the
// test run copies in and back out, so r1 points to the case's memory in the kernel as in our
// engines, and the verifier lets programs read and write it at any aligned offset. A socket
// filter is refused more often (stores into its context) and, worse, accepted wrongly: the
// verifier rewrites loads from __sk_buff into loads of the kernel's skb fields, so a case
// reading its memory through r1 would see the packet's length, protocol and so on.
#include "../vm/test_util.hpp"

#include <bpftime/vm/conformance.hpp>
#include <bpftime/vm/vm.hpp>

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace bpftime::vm {
namespace {

namespace fs = std::filesystem;

/// A program file descriptor, closed when it goes out of scope: nothing stays in the kernel.
class prog_fd {
public:
    prog_fd() = default;
    explicit prog_fd(int fd) : fd_(fd) {}
    prog_fd(prog_fd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    prog_fd &operator=(prog_fd &&other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    prog_fd(const prog_fd &) = delete;
    prog_fd &operator=(const prog_fd &) = delete;
    ~prog_fd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }

private:
    void reset() {
        if (fd_ >= 0) {
            close(fd_);
            fd_ = -1;
        }
    }
    int fd_ = -1;
};

/// What the kernel made of a program: a descriptor, or the errno and the verifier's reason.
struct kernel_load {
    prog_fd fd;
    int err = 0;
    std::string reason;
};

/// A line of the verifier's walk: "12: (bf) r1 = r2", "12: R1=ctx() R10=fp0",
/// "from 3 to 5: ...", "; source text".
bool is_trace_line(const std::string &line) {
    size_t digits = 0;
    while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits]))) {
        digits++;
    }
    return (digits > 0 && digits < line.size() && line[digits] == ':') ||
           line.rfind("from ", 0) == 0 || line.rfind(";", 0) == 0;
}

/// The first line of the verifier's reason for a refusal: the log holds the instructions it
/// walked, then the reason, then statistics.
std::string refusal_reason(const char *log, int err) {
    std::vector<std::string> lines;
    std::istringstream in{std::string(log)};
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.rfind("processed ", 0) != 0 &&
            line.rfind("verification time", 0) != 0 && line.rfind("stack depth", 0) != 0) {
            lines.push_back(line);
        }
    }
    auto last_trace = std::find_if(lines.rbegin(), lines.rend(), is_trace_line);
    auto reason = last_trace.base(); // the line after the last line of the walk
    if (reason != lines.end()) {
        return *reason;
    }
    return std::string("(no verifier log) ") + std::strerror(err);
}

/// Loads instructions into the kernel as a program of the type (BPF_PROG_TYPE_SYSCALL
/// programs must be sleepable).
kernel_load load_in_kernel(std::span<const ebpf_inst> insns, bpf_prog_type type) {
    static_assert(sizeof(ebpf_inst) == sizeof(bpf_insn));
    std::vector<bpf_insn> kinsns(insns.size());
    std::memcpy(kinsns.data(), insns.data(), insns.size_bytes());
    std::vector<char> log(1 << 20, '\0');
    LIBBPF_OPTS(bpf_prog_load_opts, opts);
    opts.prog_flags = type == BPF_PROG_TYPE_SYSCALL ? BPF_F_SLEEPABLE : 0;
    // With log_level 0 and a buffer, libbpf loads without a log and loads again with one
    // when the verifier refuses.
    opts.log_buf = log.data();
    opts.log_size = static_cast<__u32>(log.size() - 1);
    kernel_load out;
    int fd = bpf_prog_load(type, "conformance", "GPL", kinsns.data(), kinsns.size(), &opts);
    if (fd < 0) {
        out.err = errno;
        out.reason = refusal_reason(log.data(), out.err);
    } else {
        out.fd = prog_fd(fd);
    }
    return out;
}

/// What one BPF_PROG_TEST_RUN of a syscall program gave: its 32-bit return value and its
/// context (the case's memory) as the program left it.
struct kernel_run {
    uint32_t retval = 0;
    std::vector<uint8_t> mem;
};

result<kernel_run> run_in_kernel(const prog_fd &fd, const std::vector<uint8_t> &mem) {
    kernel_run out{0, mem};
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    opts.ctx_in = out.mem.empty() ? nullptr : out.mem.data();
    opts.ctx_size_in = static_cast<__u32>(out.mem.size());
    if (bpf_prog_test_run_opts(fd.get(), &opts) != 0) {
        int err = errno;
        return make_error(err, std::string("BPF_PROG_TEST_RUN: ") + std::strerror(err));
    }
    out.retval = opts.retval;
    return out;
}

bool is_lddw(const ebpf_inst &i) {
    return i.opcode == op_lddw;
}

/// The pc-relative target of a jump, a local call or a code-address lddw at pc.
std::optional<int64_t> target_of(const ebpf_inst &i, int64_t pc) {
    if (is_lddw(i)) {
        return i.src == pseudo_code_addr ? std::optional(pc + i.imm + 1) : std::nullopt;
    }
    uint8_t cls = op_class(i.opcode);
    uint8_t op = i.opcode & 0xf0;
    if ((cls != cls_jmp && cls != cls_jmp32) || op == jmp_exit) {
        return std::nullopt;
    }
    if (op == jmp_call) {
        bool local = i.opcode == op_call && i.src == call_local;
        return local ? std::optional(pc + i.imm + 1) : std::nullopt;
    }
    if (i.opcode == op_ja32) {
        return pc + i.imm + 1; // gotol: the offset is in imm
    }
    return pc + i.offset + 1;
}

/// Sets the target of an instruction target_of() answers for; false when the offset does
/// not fit its field.
bool set_target(ebpf_inst &i, int64_t pc, int64_t target) {
    int64_t rel = target - pc - 1;
    if (is_lddw(i) || i.opcode == op_call || i.opcode == op_ja32) {
        if (rel < INT32_MIN || rel > INT32_MAX) {
            return false;
        }
        i.imm = static_cast<int32_t>(rel);
        return true;
    }
    if (rel < INT16_MIN || rel > INT16_MAX) {
        return false;
    }
    i.offset = static_cast<int16_t>(rel);
    return true;
}

/// The program with every exit of its main function turned into a jump to an epilogue
/// `r0 >>= 32; exit`, so that the kernel's 32-bit return value carries the high half of r0.
/// The epilogue ends the main function (the instructions before the first bpf-to-bpf callee):
/// the verifier refuses jumps from one function into another. Empty when an offset would not
/// fit its field.
std::vector<ebpf_inst> high_half_version(std::span<const ebpf_inst> insns) {
    const auto n = static_cast<int64_t>(insns.size());
    int64_t main_end = n;
    for (int64_t pc = 0; pc < n; pc += is_lddw(insns[static_cast<size_t>(pc)]) ? 2 : 1) {
        const ebpf_inst &i = insns[static_cast<size_t>(pc)];
        bool names_function = (i.opcode == op_call && i.src == call_local) ||
                              (is_lddw(i) && i.src == pseudo_code_addr);
        if (names_function) {
            main_end = std::min(main_end, *target_of(i, pc));
        }
    }
    main_end = std::clamp<int64_t>(main_end, 0, n);
    constexpr int64_t epilogue_size = 2;
    auto moved = [&](int64_t pc) { return pc < main_end ? pc : pc + epilogue_size; };

    std::vector<ebpf_inst> out(insns.begin(), insns.begin() + main_end);
    out.push_back(test::insn(cls_alu64 | src_k | alu_rsh, 0, 0, 0, 32));
    out.push_back(test::exit_insn());
    out.insert(out.end(), insns.begin() + main_end, insns.end());
    for (int64_t pc = 0; pc < n; pc += is_lddw(insns[static_cast<size_t>(pc)]) ? 2 : 1) {
        const ebpf_inst &old = insns[static_cast<size_t>(pc)];
        ebpf_inst &now = out[static_cast<size_t>(moved(pc))];
        if (old.opcode == op_exit && pc < main_end) {
            now = test::insn(op_ja);
            if (!set_target(now, pc, main_end)) {
                return {};
            }
        } else if (auto target = target_of(old, pc)) {
            if (!set_target(now, moved(pc), moved(*target))) {
                return {};
            }
        }
    }
    return out;
}

/// One engine variant's outcome on a case.
struct engine_outcome {
    std::string name;
    std::optional<uint64_t> value;
    std::string error; ///< when there is no value
    std::vector<uint8_t> mem;
};

std::string variant_name(const test::engine_variant &v) {
    std::string name = engine_name(v.kind);
    if (v.kind == engine_kind::jit) {
        name += std::string("_") + jit_tier_name(v.opts.tier);
    }
    return name;
}

/// Runs a case on every engine variant as run_conformance() does: r1 = a copy of its memory.
std::vector<engine_outcome> run_on_engines(const conformance_case &c) {
    std::vector<engine_outcome> out;
    auto prog = program::load(c.insns);
    for (const test::engine_variant &v : test::engine_variants()) {
        engine_outcome &o = out.emplace_back(engine_outcome{variant_name(v), {}, {}, c.mem});
        if (!prog) {
            o.error = prog.err().message;
            continue;
        }
        auto eng = make_engine(v.kind, *prog, v.opts);
        if (!eng) {
            o.error = eng.err().message;
            continue;
        }
        auto r0 = (*eng)->run(o.mem.empty() ? nullptr : o.mem.data(), o.mem.size());
        if (r0) {
            o.value = *r0;
        } else {
            o.error = r0.err().message;
        }
    }
    return out;
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
    return buf;
}

std::string hex_bytes(const std::vector<uint8_t> &mem) {
    std::string out;
    for (uint8_t b : mem) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%s%02x", out.empty() ? "" : " ", b);
        out += buf;
    }
    return out;
}

/// A refusal reason with its numbers taken out, so that "off=2 size=8" and "off=4 size=8"
/// count as one reason (register names such as R2 stay).
std::string reason_key(const std::string &reason) {
    std::string key;
    for (size_t i = 0; i < reason.size(); i++) {
        auto at = [&](size_t j) { return static_cast<unsigned char>(reason[j]); };
        bool after_letter = i > 0 && std::isalpha(at(i - 1));
        bool minus =
            reason[i] == '-' && i + 1 < reason.size() && std::isdigit(at(i + 1)) && !after_letter;
        if ((std::isdigit(at(i)) && !after_letter) || minus) {
            key += 'N';
            i++;
            while (i < reason.size() && std::isalnum(at(i))) {
                i++;
            }
            i--;
        } else {
            key += reason[i];
        }
    }
    return key;
}

// The kernel (Linux 6.18) accepts 204 of the 225 cases; fewer than this means that the
// harness, not the verifier, refuses them.
constexpr size_t min_compared = 190;

/// Whether the kernel loads `mov r0, 0; exit` as the type; when it does not, *skip says why
/// the test cannot run here (no permission, no such program type), or stays empty.
::testing::AssertionResult kernel_loads_trivial_program(bpf_prog_type type, std::string *skip) {
    const ebpf_inst trivial[] = {test::mov64_imm(0, 0), test::exit_insn()};
    kernel_load probe = load_in_kernel(trivial, type);
    if (probe.fd) {
        return ::testing::AssertionSuccess();
    }
    if (probe.err == EPERM || probe.err == EACCES || probe.err == ENOSYS) {
        *skip = std::string("the kernel refuses eBPF programs here (needs root with CAP_BPF): ") +
                std::strerror(probe.err);
    } else if (type == BPF_PROG_TYPE_SYSCALL && probe.err == EINVAL) {
        *skip = "the kernel has no BPF_PROG_TYPE_SYSCALL programs (Linux 5.14 and later): " +
                probe.reason;
    }
    return ::testing::AssertionFailure()
           << "the kernel refuses `mov r0, 0; exit` (program type " << type
           << "): " << std::strerror(probe.err) << ": " << probe.reason;
}

TEST(KernelConformance, KernelAgreesWithEnginesOnSharedCases) {
    for (bpf_prog_type type : {BPF_PROG_TYPE_SOCKET_FILTER, BPF_PROG_TYPE_SYSCALL}) {
        std::string skip;
        auto loaded = kernel_loads_trivial_program(type, &skip);
        if (!skip.empty()) {
            GTEST_SKIP() << skip;
        }
        ASSERT_TRUE(loaded);
    }
    const fs::path dir = fs::path(BPFTIME_SHARED_DIR) / "conformance" / "tests";
    std::vector<fs::path> files;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator(dir, ec)) {
        if (entry.path().extension() == ".data") {
            files.push_back(entry.path());
        }
    }
    if (files.empty()) {
        GTEST_SKIP() << "no conformance data in " << dir.string();
    }
    std::sort(files.begin(), files.end());

    size_t cases = 0, expect_error = 0, accepted = 0, full = 0, compared = 0;
    std::vector<std::string> low_only;
    struct refusal {
        size_t count = 0;
        std::string example;
    };
    std::map<std::string, refusal> refusals;
    for (const fs::path &file : files) {
        auto loaded = load_conformance_file(file.string());
        ASSERT_TRUE(loaded) << loaded.err().message;
        const conformance_case &c = *loaded;
        cases++;
        if (c.error || !c.result) {
            expect_error++;
            continue;
        }
        kernel_load low = load_in_kernel(c.insns, BPF_PROG_TYPE_SYSCALL);
        if (!low.fd) {
            refusal &r = refusals[reason_key(low.reason)];
            if (r.count++ == 0) {
                r.example = c.name + ": " + low.reason;
            }
            continue;
        }
        accepted++;
        auto low_run = run_in_kernel(low.fd, c.mem);
        if (!low_run) {
            ADD_FAILURE() << c.name << ": the kernel loaded it but " << low_run.err().message;
            continue;
        }
        uint64_t kernel = low_run->retval;
        uint64_t mask = 0xffff'ffff;
        std::vector<ebpf_inst> high_insns = high_half_version(c.insns);
        kernel_load high;
        if (!high_insns.empty()) {
            high = load_in_kernel(high_insns, BPF_PROG_TYPE_SYSCALL);
        }
        if (high.fd) {
            auto high_run = run_in_kernel(high.fd, c.mem);
            if (!high_run) {
                ADD_FAILURE() << c.name << ": the kernel loaded its high-half version but "
                              << high_run.err().message;
                continue;
            }
            kernel |= static_cast<uint64_t>(high_run->retval) << 32;
            mask = ~uint64_t{0};
            full++;
        } else {
            low_only.push_back(c.name + " (the version returning the high half: " +
                               (high_insns.empty() ? "jump offsets do not fit" : high.reason) +
                               ")");
        }
        compared++;

        std::vector<engine_outcome> engines = run_on_engines(c);
        bool same_value = (kernel & mask) == (*c.result & mask);
        bool same_mem = true;
        for (const engine_outcome &e : engines) {
            same_value = same_value && e.value && (*e.value & mask) == (kernel & mask);
            same_mem = same_mem && e.mem == low_run->mem;
        }
        if (!same_value) {
            std::string msg = c.name + ": kernel " + hex(kernel) +
                              (mask == ~uint64_t{0} ? "" : " (low 32 bits only)") + ", expected " +
                              hex(*c.result);
            for (const engine_outcome &e : engines) {
                msg += ", " + e.name + " " + (e.value ? hex(*e.value) : "error: " + e.error);
            }
            ADD_FAILURE() << msg;
        }
        if (!same_mem) {
            std::string msg =
                c.name + ": memory after the run differs: kernel [" + hex_bytes(low_run->mem) + "]";
            for (const engine_outcome &e : engines) {
                msg += ", " + e.name + " [" + hex_bytes(e.mem) + "]";
            }
            ADD_FAILURE() << msg;
        }
    }

    std::vector<std::pair<std::string, refusal>> top(refusals.begin(), refusals.end());
    std::stable_sort(top.begin(), top.end(),
                     [](const auto &a, const auto &b) { return a.second.count > b.second.count; });
    top.resize(std::min<size_t>(top.size(), 5));
    std::string summary =
        "kernel conformance: " + std::to_string(cases) + " cases, " + std::to_string(expect_error) +
        " expecting an error (not loaded); " + "the kernel accepted " + std::to_string(accepted) +
        ", refused " + std::to_string(cases - expect_error - accepted) + "; compared " +
        std::to_string(compared) + ": " + std::to_string(full) + " in full 64 bits, " +
        std::to_string(low_only.size()) + " in the low 32 bits only\n";
    for (const std::string &what : low_only) {
        summary += "  low 32 bits only: " + what + "\n";
    }
    for (const auto &[reason, r] : top) {
        summary += "  refused " + std::to_string(r.count) + "x: " + reason +
                   " (first: " + r.example + ")\n";
    }
    std::printf("%s", summary.c_str());
    EXPECT_GE(compared, min_compared) << "too few cases compared";
}

} // namespace
} // namespace bpftime::vm
