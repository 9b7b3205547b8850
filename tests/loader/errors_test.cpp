// SPDX-License-Identifier: MIT
// Objects the loader must refuse with a clear error, and damaged objects it must survive.
#include <bpftime/loader/elf.hpp>
#include <bpftime/vm/vm.hpp>

#include <gtest/gtest.h>

#include <elf.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace bpftime::loader {
namespace {

std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    EXPECT_TRUE(in) << path;
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string example(const std::string &name) {
    return std::string(BPFTIME_EXAMPLES_DIR) + "/" + name + ".bpf.o";
}

std::string test_object(const std::string &name) {
    return std::string(BPFTIME_LOADER_TEST_OBJECTS_DIR) + "/" + name + ".bpf.o";
}

/// The error of opening an object that must fail ("" and a test failure when it opens).
std::string open_error(const result<elf_object> &r) {
    if (r) {
        ADD_FAILURE() << "the object opened";
        return {};
    }
    EXPECT_NE(r.err().code, 0);
    return r.err().message;
}

TEST(ElfLoaderErrors, MissingFile) {
    auto r = open_elf("/nonexistent/missing.bpf.o");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, ENOENT);
    EXPECT_NE(r.err().message.find("/nonexistent/missing.bpf.o"), std::string::npos);
    EXPECT_NE(r.err().message.find("No such file"), std::string::npos) << r.err().message;
}

TEST(ElfLoaderErrors, Directory) {
    std::string message = open_error(open_elf(BPFTIME_EXAMPLES_DIR));
    EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
}

TEST(ElfLoaderErrors, NotElf) {
    const std::string text = "int main(void) { return 0; }\n";
    std::vector<uint8_t> bytes(text.begin(), text.end());
    std::string message = open_error(open_elf_memory(bytes, "main.c"));
    EXPECT_EQ(message, "main.c: not an ELF file");
    EXPECT_EQ(open_error(open_elf_memory({}, "empty.o")), "empty.o: not an ELF file");
}

TEST(ElfLoaderErrors, HostObject) {
    std::string message = open_error(open_elf(BPFTIME_HOST_OBJECT));
    EXPECT_NE(message.find(BPFTIME_HOST_OBJECT), std::string::npos) << message;
    EXPECT_NE(message.find("x86-64, not eBPF"), std::string::npos) << message;
}

TEST(ElfLoaderErrors, HeaderFields) {
    const std::vector<uint8_t> good = read_file(example("counter"));
    auto patched = [&](size_t offset, std::vector<uint8_t> value) {
        std::vector<uint8_t> bytes = good;
        std::copy(value.begin(), value.end(), bytes.begin() + static_cast<ptrdiff_t>(offset));
        return open_error(open_elf_memory(bytes, "patched.o"));
    };
    EXPECT_NE(patched(offsetof(Elf64_Ehdr, e_machine), {EM_AARCH64, 0}).find("AArch64"),
              std::string::npos);
    EXPECT_NE(patched(EI_DATA, {ELFDATA2MSB}).find("big-endian"), std::string::npos);
    EXPECT_NE(patched(EI_CLASS, {ELFCLASS32}).find("32-bit"), std::string::npos);
    EXPECT_NE(patched(offsetof(Elf64_Ehdr, e_type), {ET_EXEC, 0}).find("not a relocatable"),
              std::string::npos);
}

TEST(ElfLoaderErrors, UnsupportedMapType) {
    std::string message = open_error(open_elf(test_object("bad_map")));
    EXPECT_NE(message.find("map 'pending' has type 15 (sockmap)"), std::string::npos) << message;
    EXPECT_NE(message.find("not support"), std::string::npos) << message;
}

TEST(ElfLoaderErrors, Kfunc) {
    auto r = open_elf(test_object("extern_kfunc"));
    std::string message = open_error(r);
    EXPECT_EQ(r.err().code, ENOTSUP);
    EXPECT_NE(message.find("function 'calls_kfunc' of section 'test', instruction 1 (call "
                           "local -1)"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("extern 'bpf_kfunc_example'"), std::string::npos) << message;
}

// __kconfig externs are resolved as libbpf does; a strong one it does not know is refused by
// name (weak ones default to 0: ElfLoader.KconfigExterns).
TEST(ElfLoaderErrors, UnknownStrongKconfigExtern) {
    auto r = open_elf(test_object("extern_kconfig"));
    std::string message = open_error(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(message.find("__kconfig extern 'LINUX_BPFTIME_NO_SUCH_VALUE'"), std::string::npos)
        << message;
    EXPECT_NE(message.find("declare it __weak"), std::string::npos) << message;
}

TEST(ElfLoaderErrors, StrongKconfigOptionTheKernelDoesNotSet) {
    auto r = open_elf(test_object("kconfig_missing"));
    std::string message = open_error(r);
    EXPECT_EQ(r.err().code, EINVAL);
    EXPECT_NE(message.find("__kconfig extern 'CONFIG_BPFTIME_NO_SUCH_OPTION'"), std::string::npos)
        << message;
    EXPECT_NE(message.find("kernel's configuration"), std::string::npos) << message;
}

TEST(ElfLoaderErrors, CoreRelocationNeedingKernelBtf) {
    std::string message = open_error(open_elf(test_object("core_target")));
    EXPECT_NE(message.find("program 'kernel_type_id', instruction 0"), std::string::npos)
        << message;
    EXPECT_NE(message.find("CO-RE relocation of kind 7"), std::string::npos) << message;
}

// The offset of the relocation entries for the code section "test" in an object.
size_t test_relocations(const std::vector<uint8_t> &bytes) {
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof eh);
    std::vector<Elf64_Shdr> sh(eh.e_shnum);
    std::memcpy(sh.data(), bytes.data() + eh.e_shoff, sh.size() * sizeof(Elf64_Shdr));
    const char *names = reinterpret_cast<const char *>(bytes.data() + sh[eh.e_shstrndx].sh_offset);
    for (const Elf64_Shdr &s : sh) {
        if (s.sh_type == SHT_REL && std::strcmp(names + s.sh_name, ".reltest") == 0) {
            return s.sh_offset;
        }
    }
    ADD_FAILURE() << "no .reltest section";
    return 0;
}

TEST(ElfLoaderErrors, UnknownRelocationType) {
    std::vector<uint8_t> bytes = read_file(example("counter"));
    size_t rel = test_relocations(bytes);
    ASSERT_NE(rel, 0u);
    Elf64_Rel entry;
    std::memcpy(&entry, bytes.data() + rel, sizeof entry);
    entry.r_info = ELF64_R_INFO(ELF64_R_SYM(entry.r_info), 3); // R_BPF_64_ABS32
    std::memcpy(bytes.data() + rel, &entry, sizeof entry);
    std::string message = open_error(open_elf_memory(bytes, "counter.bpf.o"));
    EXPECT_NE(message.find("program 'count_calls', instruction 4"), std::string::npos) << message;
    EXPECT_NE(message.find("relocation type 3"), std::string::npos) << message;
}

// Damaged objects must give an error or a valid object, never a crash (run under ASan too).
class ElfLoaderDamage : public ::testing::TestWithParam<std::string> {
protected:
    static void open_survives(const std::vector<uint8_t> &bytes, const std::string &what) {
        auto r = open_elf_memory(bytes, "damaged.o");
        if (!r) {
            EXPECT_FALSE(r.err().message.empty()) << what;
            return;
        }
        // What opens goes on to validation, which must refuse or accept it just as calmly.
        vm::load_options opts;
        opts.resolver = [](uint8_t, int32_t, int32_t) -> result<vm::resolved_lddw> {
            return vm::resolved_lddw{};
        };
        for (const elf_program &prog : r->programs) {
            EXPECT_FALSE(prog.insns.empty()) << what;
            (void)vm::validate(prog.insns, opts);
        }
    }
};

TEST_P(ElfLoaderDamage, Truncated) {
    const std::vector<uint8_t> good = read_file(GetParam());
    ASSERT_FALSE(good.empty());
    // Every length inside the header and section table, a spread elsewhere.
    for (size_t len = 0; len < good.size(); len += len < 128 ? 1 : 1 + good.size() / 400) {
        std::vector<uint8_t> bytes(good.begin(), good.begin() + static_cast<ptrdiff_t>(len));
        auto r = open_elf_memory(bytes, "truncated.o");
        EXPECT_FALSE(r) << "truncated to " << len << " bytes, the object still opened";
    }
}

TEST_P(ElfLoaderDamage, FlippedBytes) {
    const std::vector<uint8_t> good = read_file(GetParam());
    ASSERT_FALSE(good.empty());
    std::mt19937 rng(20240611);
    std::uniform_int_distribution<size_t> pos(0, good.size() - 1);
    std::uniform_int_distribution<int> flips(1, 4);
    std::uniform_int_distribution<int> value(1, 255);
    for (int round = 0; round < 3000; round++) {
        std::vector<uint8_t> bytes = good;
        std::string what = "round " + std::to_string(round) + ":";
        for (int n = flips(rng); n > 0; n--) {
            size_t at = pos(rng);
            bytes[at] ^= static_cast<uint8_t>(value(rng));
            what += " " + std::to_string(at);
        }
        open_survives(bytes, what);
    }
}

INSTANTIATE_TEST_SUITE_P(Objects, ElfLoaderDamage,
                         ::testing::Values(example("counter"), example("ringbuf_log"),
                                           example("subprog"), test_object("calls")),
                         [](const auto &param_info) {
                             std::string name =
                                 param_info.param.substr(param_info.param.rfind('/') + 1);
                             return name.substr(0, name.find('.'));
                         });

} // namespace
} // namespace bpftime::loader
