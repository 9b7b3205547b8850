// SPDX-License-Identifier: MIT
// Probe targets as users write them: uprobes resolved in this test binary and in libc, checked
// against where the code really is in this process, every refusal with its message, binaries
// found by name, and tracepoint ids.
#include <bpftime/attach/probe_target.hpp>

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

extern "C" __attribute__((noinline, used)) int bpftime_probe_target_function(int x) {
    // Enough work that the function is longer than a few bytes and is not folded away.
    volatile int acc = x;
    for (int i = 0; i < x; i++) {
        acc = acc * 31 + i;
    }
    return acc;
}

namespace bpftime {
namespace {

namespace fs = std::filesystem;

const std::string test_function = "bpftime_probe_target_function";

/// The mapping of this process that holds an address: its load base (start minus file offset)
/// and its path.
struct mapping {
    uintptr_t base = 0;
    std::string path;
};

mapping mapping_of(uintptr_t address) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        uintptr_t start = 0;
        uintptr_t end = 0;
        unsigned long long offset = 0;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %7s %llx %*s %*s %n", &start, &end,
                        perms, &offset, &path_at) < 4) {
            continue;
        }
        if (address >= start && address < end) {
            return {start - static_cast<uintptr_t>(offset), line.substr(path_at)};
        }
    }
    ADD_FAILURE() << "no mapping holds " << std::hex << address;
    return {};
}

std::string self_path() {
    auto path = find_binary("/proc/self/exe");
    EXPECT_TRUE(path) << path.err().message;
    return path ? *path : std::string();
}

std::string libc_path() {
    auto path = find_binary("libc.so.6");
    EXPECT_TRUE(path) << path.err().message;
    return path ? *path : std::string();
}

/// The message of a resolution that must fail ("" and a test failure when it succeeds).
std::string uprobe_error(const std::string &args) {
    auto r = resolve_uprobe_target(args);
    if (r) {
        ADD_FAILURE() << args << " resolved to " << r->binary << " at 0x" << std::hex << r->address;
        return {};
    }
    EXPECT_NE(r.err().code, 0);
    EXPECT_EQ(r.err().message.rfind(args + ": ", 0), 0u)
        << "the message does not start with the text given: " << r.err().message;
    return r.err().message;
}

/// Expects the file offset of a resolution, placed at the load base of the mapping that holds
/// `runtime`, to be `runtime`.
void expect_lands_on(const uprobe_location &loc, uintptr_t runtime) {
    mapping m = mapping_of(runtime);
    EXPECT_EQ(fs::canonical(m.path).string(), loc.binary);
    EXPECT_EQ(loc.file_offset + m.base, runtime)
        << std::hex << "file offset 0x" << loc.file_offset << ", base 0x" << m.base;
}

/// A temporary folder, removed at the end of the test.
class temp_dir {
public:
    temp_dir() {
        std::string pattern = (fs::temp_directory_path() / "bpftime-probe-XXXXXX").string();
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        EXPECT_NE(::mkdtemp(buf.data()), nullptr) << std::strerror(errno);
        path_ = buf.data();
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

/// A copy of /usr/bin/true with some header bytes changed.
std::string patched_true(const temp_dir &dir, size_t at, std::vector<uint8_t> bytes) {
    std::string path = dir.file("patched");
    fs::copy_file("/usr/bin/true", path);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    return path;
}

// --- resolving in this binary and in libc -------------------------------------------------

TEST(ProbeTarget, FunctionOfThisBinary) {
    auto r = resolve_uprobe_target("/proc/self/exe:" + test_function);
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->binary, self_path());
    EXPECT_TRUE(fs::path(r->binary).is_absolute());
    EXPECT_EQ(r->symbol, test_function);
    EXPECT_EQ(r->offset, 0u);
    expect_lands_on(*r, reinterpret_cast<uintptr_t>(&bpftime_probe_target_function));
}

TEST(ProbeTarget, FunctionPlusOffset) {
    auto start = resolve_uprobe_target("/proc/self/exe:" + test_function);
    ASSERT_TRUE(start) << start.err().message;
    for (const std::string offset : {"4", "0x4"}) {
        auto r = resolve_uprobe_target("/proc/self/exe:" + test_function + "+" + offset);
        ASSERT_TRUE(r) << r.err().message;
        EXPECT_EQ(r->symbol, test_function);
        EXPECT_EQ(r->offset, 4u);
        EXPECT_EQ(r->address, start->address + 4);
        EXPECT_EQ(r->file_offset, start->file_offset + 4);
        expect_lands_on(*r, reinterpret_cast<uintptr_t>(&bpftime_probe_target_function) + 4);
    }
}

TEST(ProbeTarget, AddressOfThisBinary) {
    auto by_name = resolve_uprobe_target("/proc/self/exe:" + test_function);
    ASSERT_TRUE(by_name) << by_name.err().message;
    char text[32];
    std::snprintf(text, sizeof(text), "0x%" PRIx64, by_name->address);
    auto r = resolve_uprobe_target(std::string("/proc/self/exe:") + text);
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->binary, by_name->binary);
    EXPECT_EQ(r->symbol, "");
    EXPECT_EQ(r->offset, 0u);
    EXPECT_EQ(r->address, by_name->address);
    EXPECT_EQ(r->file_offset, by_name->file_offset);
    expect_lands_on(*r, reinterpret_cast<uintptr_t>(&bpftime_probe_target_function));
}

TEST(ProbeTarget, SymbolicLinksAndRelativePathsAreResolved) {
    temp_dir dir;
    std::string link = dir.file("link-to-test");
    fs::create_symlink(self_path(), link);
    auto r = resolve_uprobe_target(link + ":" + test_function);
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->binary, self_path());

    std::string relative = fs::relative(self_path(), fs::current_path()).string();
    if (relative.find('/') == std::string::npos) {
        relative = "./" + relative;
    }
    auto rel = resolve_uprobe_target(relative + ":" + test_function);
    ASSERT_TRUE(rel) << rel.err().message;
    EXPECT_EQ(rel->binary, self_path());
    EXPECT_EQ(rel->file_offset, r->file_offset);
}

TEST(ProbeTarget, LibcMallocByBareName) {
    void *libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(libc, nullptr) << ::dlerror();
    void *malloc_in_libc = ::dlsym(libc, "malloc");
    ::dlclose(libc);
    ASSERT_NE(malloc_in_libc, nullptr);
    Dl_info info{};
    ASSERT_NE(::dladdr(malloc_in_libc, &info), 0);
    ASSERT_EQ(fs::canonical(info.dli_fname).string(), libc_path());

    auto r = resolve_uprobe_target("libc.so.6:malloc");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_TRUE(fs::path(r->binary).is_absolute());
    EXPECT_EQ(r->binary, libc_path());
    EXPECT_EQ(r->symbol, "malloc");
    expect_lands_on(*r, reinterpret_cast<uintptr_t>(malloc_in_libc));
    auto at = runtime_address(*r);
    ASSERT_TRUE(at) << at.err().message;
    EXPECT_EQ(*at, reinterpret_cast<uintptr_t>(malloc_in_libc));
}

TEST(ProbeTarget, RuntimeAddressInThisProcess) {
    auto r = resolve_uprobe_target("/proc/self/exe:" + test_function + "+4");
    ASSERT_TRUE(r) << r.err().message;
    auto at = runtime_address(*r);
    ASSERT_TRUE(at) << at.err().message;
    EXPECT_EQ(*at, reinterpret_cast<uintptr_t>(&bpftime_probe_target_function) + 4);
    EXPECT_GT(r->bytes_to_end, 0u) << "the symbol's size less the offset";
}

TEST(ProbeTargetErrors, BinaryNotMappedHere) {
    // The start of true's code segment (Debian's coreutils: 0x2000).
    auto r = resolve_uprobe_target("true:0x2000");
    if (!r) {
        GTEST_SKIP() << "no symbol or code address in true to resolve: " << r.err().message;
    }
    auto at = runtime_address(*r);
    ASSERT_FALSE(at);
    EXPECT_NE(at.err().message.find(r->binary + " is not mapped executable in this process"),
              std::string::npos)
        << at.err().message;
}

// --- refusals -----------------------------------------------------------------------------

TEST(ProbeTargetErrors, MalformedText) {
    const std::string syntax = "expected BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS";
    EXPECT_EQ(uprobe_error("nocolon"), "nocolon: " + syntax);
    EXPECT_EQ(uprobe_error(":sym"), ":sym: no binary before ':' (" + syntax + ")");
    EXPECT_EQ(uprobe_error("/bin/true:"),
              "/bin/true:: no symbol or address after ':' (" + syntax + ")");
    EXPECT_EQ(uprobe_error("/bin/true:f+zz"),
              "/bin/true:f+zz: bad offset 'zz' (decimal or 0x hex)");
    EXPECT_EQ(uprobe_error("/bin/true:f+"), "/bin/true:f+: no offset after '+'");
    EXPECT_EQ(uprobe_error("/bin/true:+4"), "/bin/true:+4: no symbol before '+'");
    EXPECT_EQ(uprobe_error("/bin/true:f+-1"),
              "/bin/true:f+-1: bad offset '-1' (decimal or 0x hex)");
    EXPECT_EQ(uprobe_error("/bin/true:f+99999999999999999999"),
              "/bin/true:f+99999999999999999999: bad offset '99999999999999999999' (decimal or "
              "0x hex)");
    const std::string address_help = "(an address is hexadecimal with 0x, e.g. 0x1139)";
    EXPECT_EQ(uprobe_error("/bin/true:0xzz"), "/bin/true:0xzz: bad address '0xzz' " + address_help);
    EXPECT_EQ(uprobe_error("/bin/true:0x"), "/bin/true:0x: bad address '0x' " + address_help);
    // nm prints addresses without 0x: such text is refused, not read as decimal.
    EXPECT_EQ(uprobe_error("/bin/true:0000000000002a40"),
              "/bin/true:0000000000002a40: bad address '0000000000002a40' " + address_help);
}

TEST(ProbeTargetErrors, MissingBinary) {
    EXPECT_EQ(uprobe_error("/nonexistent/binary:main"),
              "/nonexistent/binary:main: /nonexistent/binary: No such file or directory");
    EXPECT_EQ(uprobe_error("no-such-binary-xyz:main")
                  .find("no-such-binary-xyz:main: no-such-binary-xyz: not found in $PATH"),
              0u);
}

TEST(ProbeTargetErrors, DirectoryIsNotABinary) {
    EXPECT_EQ(uprobe_error("/usr/bin/:main"),
              "/usr/bin/:main: /usr/bin/: not a regular file (/usr/bin)");
}

TEST(ProbeTargetErrors, UnreadableBinary) {
    if (::geteuid() == 0) {
        GTEST_SKIP() << "root reads files whatever their mode";
    }
    temp_dir dir;
    std::string path = dir.file("unreadable");
    fs::copy_file("/usr/bin/true", path);
    ASSERT_EQ(::chmod(path.c_str(), 0), 0);
    EXPECT_EQ(uprobe_error(path + ":main"), path + ":main: " + path + ": Permission denied");
}

TEST(ProbeTargetErrors, NotElf) {
    temp_dir dir;
    std::string path = dir.file("notes.txt");
    std::ofstream(path) << "not a binary\n";
    EXPECT_EQ(uprobe_error(path + ":main"), path + ":main: " + path + " is not an ELF file");
    std::string empty = dir.file("empty");
    std::ofstream{empty};
    EXPECT_EQ(uprobe_error(empty + ":main"), empty + ":main: " + empty + " is not an ELF file");
}

TEST(ProbeTargetErrors, NotX86_64) {
    temp_dir dir;
    std::string path = patched_true(dir, 18, {183, 0}); // e_machine = EM_AARCH64
    EXPECT_EQ(uprobe_error(path + ":main"),
              path + ":main: " + path + " is an ELF file for AArch64, not x86-64");
}

TEST(ProbeTargetErrors, NotAnExecutableOrLibrary) {
    temp_dir dir;
    std::string path = patched_true(dir, 16, {1, 0}); // e_type = ET_REL
    EXPECT_EQ(uprobe_error(path + ":main"),
              path + ":main: " + path +
                  " is a relocatable object, not an executable or shared library");
}

TEST(ProbeTargetErrors, UnknownSymbol) {
    EXPECT_EQ(uprobe_error("/bin/true:nope"),
              "/bin/true:nope: no function 'nope' in /usr/bin/true");
    // /usr/bin/true calls malloc but libc defines it.
    EXPECT_EQ(uprobe_error("/bin/true:malloc"),
              "/bin/true:malloc: no function 'malloc' in /usr/bin/true (it only refers to "
              "'malloc', defined in a library it loads)");
    EXPECT_EQ(uprobe_error("libc.so.6:environ"), "libc.so.6:environ: no function 'environ' in " +
                                                     libc_path() +
                                                     " ('environ' there is a data object)");
    EXPECT_EQ(uprobe_error("libc.so.6:malloc@@GLIBC_2.2.5"),
              "libc.so.6:malloc@@GLIBC_2.2.5: no function 'malloc@@GLIBC_2.2.5' in " + libc_path() +
                  " (give the name without a version)");
}

TEST(ProbeTargetErrors, IndirectFunction) {
    // strlen and memcpy are ifuncs in glibc on x86-64; memcpy also has an older version that
    // is a plain function, which must not be taken for the default one.
    for (const std::string name : {"strlen", "memcpy"}) {
        EXPECT_EQ(uprobe_error("libc.so.6:" + name),
                  "libc.so.6:" + name + ": " + name + " in " + libc_path() +
                      " is an indirect function (ifunc); probe the implementation it resolves "
                      "to");
    }
}

TEST(ProbeTargetErrors, OffsetPastTheFunction) {
    std::string args = "/proc/self/exe:" + test_function + "+100000";
    std::string message = uprobe_error(args);
    EXPECT_EQ(message.find(args + ": offset 100000 is past the end of '" + test_function + "' in " +
                           self_path() + " ("),
              0u)
        << message;
    EXPECT_NE(message.find(" bytes long)"), std::string::npos) << message;
}

TEST(ProbeTargetErrors, AddressOutsideExecutableCode) {
    // 0x10 is in the ELF header: mapped, read-only.
    std::string message = uprobe_error("/bin/true:0x10");
    EXPECT_EQ(message.find("/bin/true:0x10: 0x10 in /usr/bin/true is not inside executable code; "
                           "its executable code is at 0x"),
              0u)
        << message;
    message = uprobe_error("/proc/self/exe:0xffffffff0000");
    EXPECT_EQ(message.find("/proc/self/exe:0xffffffff0000: 0xffffffff0000 in " + self_path() +
                           " is not inside executable code"),
              0u)
        << message;
}

// --- binaries by name ---------------------------------------------------------------------

TEST(FindBinary, InPath) {
    auto r = find_binary("true");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_TRUE(*r == "/usr/bin/true" || *r == "/bin/true") << *r;
}

TEST(FindBinary, InLibraryFolders) {
    auto r = find_binary("libc.so.6");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_TRUE(fs::path(*r).is_absolute()) << *r;
    EXPECT_EQ(*r, fs::canonical(*r).string());
    EXPECT_EQ(fs::path(*r).filename().string().rfind("libc", 0), 0u) << *r;
}

TEST(FindBinary, Missing) {
    auto r = find_binary("no-such-binary-xyz");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_EQ(r.err().message,
              "no-such-binary-xyz: not found in $PATH nor in the library folders "
              "(/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64, /lib, "
              "/usr/lib)");
    auto empty = find_binary("");
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.err().message, "no binary named (an empty name)");
}

// --- tracepoints --------------------------------------------------------------------------

TEST(TracepointId, KnownTracepoint) {
    const char *id_path = "/sys/kernel/tracing/events/syscalls/sys_enter_getpid/id";
    std::ifstream in(id_path);
    uint64_t expected = 0;
    if (!(in >> expected)) {
        GTEST_SKIP() << "cannot read " << id_path << " (" << std::strerror(errno)
                     << "): tracefs needs root and a kernel with syscall tracepoints";
    }
    auto r = tracepoint_id("syscalls:sys_enter_getpid");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(*r, expected);
}

/// The message of a tracepoint that must be refused ("" and a test failure when it is not).
std::string tracepoint_error(const std::string &args) {
    auto r = tracepoint_id(args);
    if (r) {
        ADD_FAILURE() << args << " gave id " << *r;
        return {};
    }
    EXPECT_NE(r.err().code, 0);
    EXPECT_EQ(r.err().message.rfind(args + ": ", 0), 0u)
        << "the message does not start with the text given: " << r.err().message;
    return r.err().message;
}

TEST(TracepointId, MalformedText) {
    const std::string syntax = "expected CATEGORY:NAME, e.g. syscalls:sys_enter_getpid";
    EXPECT_EQ(tracepoint_error("nocolon"), "nocolon: " + syntax);
    const std::string parts = " (both parts non-empty, without '/', ':' or spaces)";
    EXPECT_EQ(tracepoint_error("syscalls:"), "syscalls:: " + syntax + parts);
    EXPECT_EQ(tracepoint_error(":sys_enter_getpid"), ":sys_enter_getpid: " + syntax + parts);
    EXPECT_EQ(tracepoint_error("..:x"), "..:x: " + syntax + parts);
    EXPECT_EQ(tracepoint_error("syscalls:../../x"), "syscalls:../../x: " + syntax + parts);
}

TEST(TracepointId, UnknownTracepoint) {
    // Refused with or without tracefs; the message says which tracepoint is missing only when
    // tracefs can be read.
    std::string nope = tracepoint_error("syscalls:nope");
    std::string no_category = tracepoint_error("no_such_category_xyz:nope");
    struct stat st {};
    if (::stat("/sys/kernel/tracing/events/syscalls", &st) != 0) {
        GTEST_SKIP() << "tracefs cannot be read here (" << std::strerror(errno)
                     << "); refused with: " << nope;
    }
    EXPECT_EQ(nope, "syscalls:nope: no tracepoint 'nope' in category 'syscalls' (no "
                    "/sys/kernel/tracing/events/syscalls/nope/id)");
    EXPECT_EQ(no_category, "no_such_category_xyz:nope: no tracepoint category "
                           "'no_such_category_xyz' in /sys/kernel/tracing/events");
}

} // namespace
} // namespace bpftime
