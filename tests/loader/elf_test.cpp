// SPDX-License-Identifier: MIT
// Loading the example objects and the linker test objects: maps, programs, relocated
// lddw forms, appended subprograms, and runs on the interpreter.
#include <bpftime/loader/elf.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <gtest/gtest.h>

#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace bpftime::loader {
namespace {

std::string example(const std::string &name) {
    return std::string(BPFTIME_EXAMPLES_DIR) + "/" + name + ".bpf.o";
}

std::string test_object(const std::string &name) {
    return std::string(BPFTIME_LOADER_TEST_OBJECTS_DIR) + "/" + name + ".bpf.o";
}

std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    EXPECT_TRUE(in) << path;
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

elf_object load(const std::string &path) {
    auto obj = open_elf(path);
    if (!obj) {
        ADD_FAILURE() << obj.err().message;
        return {};
    }
    return std::move(*obj);
}

const elf_map *find_map(const elf_object &obj, const std::string &name) {
    auto it = std::find_if(obj.maps.begin(), obj.maps.end(),
                           [&](const elf_map &m) { return m.name == name; });
    return it == obj.maps.end() ? nullptr : &*it;
}

const elf_program *find_program(const elf_object &obj, const std::string &name) {
    auto it = std::find_if(obj.programs.begin(), obj.programs.end(),
                           [&](const elf_program &p) { return p.name == name; });
    return it == obj.programs.end() ? nullptr : &*it;
}

/// A relocated lddw: its pseudo kind, the map it names and the offset (next imm).
using map_ref = std::tuple<int, std::string, int32_t>;

std::multiset<map_ref> map_refs(const elf_object &obj, const elf_program &prog) {
    std::multiset<map_ref> out;
    for (size_t pc = 0; pc + 1 < prog.insns.size(); pc++) {
        const vm::ebpf_inst &inst = prog.insns[pc];
        if (inst.opcode != vm::op_lddw) {
            continue;
        }
        if (inst.src == vm::pseudo_map_idx || inst.src == vm::pseudo_map_idx_value) {
            EXPECT_LT(static_cast<size_t>(inst.imm), obj.maps.size()) << "lddw at " << pc;
            std::string name = static_cast<size_t>(inst.imm) < obj.maps.size()
                                   ? obj.maps[static_cast<size_t>(inst.imm)].name
                                   : "?";
            out.emplace(inst.src, name, prog.insns[pc + 1].imm);
        }
        pc++;
    }
    return out;
}

/// Targets of the local calls (and code-address lddw) of a program, as absolute indexes.
std::vector<int64_t> local_targets(const elf_program &prog, uint8_t opcode, uint8_t src) {
    std::vector<int64_t> out;
    for (size_t pc = 0; pc < prog.insns.size(); pc++) {
        const vm::ebpf_inst &inst = prog.insns[pc];
        if (inst.opcode == opcode && inst.src == src) {
            out.push_back(static_cast<int64_t>(pc) + 1 + inst.imm);
        }
    }
    return out;
}

uint64_t no_op_helper(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, vm::run_context *) {
    return 0;
}

/// The helpers the examples call, as stand-ins: enough to validate them.
const vm::helper_registry &stand_in_helpers() {
    static const vm::helper_registry registry = [] {
        vm::helper_registry r;
        for (uint32_t id : {1u, 2u, 3u, 5u, 14u, 16u, 130u, 131u, 132u, 133u, 181u}) {
            r.replace_helper(id, "helper_" + std::to_string(id), no_op_helper);
        }
        return r;
    }();
    return registry;
}

/// Global data in buffers that start as each map's initial value; other map references
/// resolve to a dummy (nothing here calls map helpers).
struct global_data {
    explicit global_data(const elf_object &obj) : obj_(obj) {
        for (const elf_map &m : obj.maps) {
            buffers_.push_back(m.initial_value);
        }
    }

    vm::load_options options() {
        vm::load_options opts;
        opts.helpers = &stand_in_helpers();
        opts.resolver = [this](uint8_t kind, int32_t imm,
                               int32_t next) -> result<vm::resolved_lddw> {
            if (kind == vm::pseudo_code_addr) {
                return vm::resolved_lddw{0xc0de, std::nullopt}; // engines resolve code addresses
            }
            if (imm < 0 || static_cast<size_t>(imm) >= buffers_.size()) {
                return make_error(EINVAL, "no map " + std::to_string(imm));
            }
            std::vector<uint8_t> &buf = buffers_[static_cast<size_t>(imm)];
            if (kind == vm::pseudo_map_idx) {
                return vm::resolved_lddw{0xb9f0000 + static_cast<uint64_t>(imm), std::nullopt};
            }
            if (kind != vm::pseudo_map_idx_value || !obj_.maps[imm].global_data || next < 0 ||
                static_cast<size_t>(next) > buf.size()) {
                return make_error(EINVAL, "unexpected lddw kind " + std::to_string(kind));
            }
            auto base = reinterpret_cast<uint64_t>(buf.data());
            return vm::resolved_lddw{
                base + static_cast<uint64_t>(next),
                vm::memory_region{base, buf.size(), !obj_.maps[imm].read_only}};
        };
        return opts;
    }

    /// Runs a program on the interpreter with mem as its context.
    result<uint64_t> run(const elf_program &prog, std::vector<uint8_t> mem) {
        auto loaded = vm::program::load(prog.insns, options());
        if (!loaded) {
            return loaded.err();
        }
        auto engine = vm::make_engine(vm::engine_kind::interpreter, *loaded);
        if (!engine) {
            return engine.err();
        }
        return (*engine)->run(mem.data(), mem.size());
    }

private:
    const elf_object &obj_;
    std::vector<std::vector<uint8_t>> buffers_;
};

TEST(ElfLoader, LooksLikeElf) {
    const uint8_t elf[] = {0x7f, 'E', 'L', 'F', 2};
    const uint8_t text[] = {'#', '!', '/', 'b'};
    EXPECT_TRUE(looks_like_elf(elf));
    EXPECT_FALSE(looks_like_elf(text));
    EXPECT_FALSE(looks_like_elf({}));
}

TEST(ElfLoader, CounterMapsAndPrograms) {
    elf_object obj = load(example("counter"));
    EXPECT_EQ(obj.path, example("counter"));
    ASSERT_EQ(obj.maps.size(), 2u);
    EXPECT_EQ(obj.maps[0].name, "counts");
    EXPECT_EQ(obj.maps[0].spec.type, maps::map_type::hash);
    EXPECT_EQ(obj.maps[0].spec.key_size, 4u);
    EXPECT_EQ(obj.maps[0].spec.value_size, 8u);
    EXPECT_EQ(obj.maps[0].spec.max_entries, 1024u);
    EXPECT_FALSE(obj.maps[0].global_data);
    EXPECT_TRUE(obj.maps[0].initial_value.empty());
    EXPECT_EQ(obj.maps[1].name, "totals");
    EXPECT_EQ(obj.maps[1].spec.type, maps::map_type::array);
    EXPECT_EQ(obj.maps[1].spec.max_entries, 16u);

    ASSERT_EQ(obj.programs.size(), 2u);
    const elf_program *calls = find_program(obj, "count_calls");
    const elf_program *array = find_program(obj, "count_array");
    ASSERT_TRUE(calls && array);
    EXPECT_EQ(calls->section, "test");
    EXPECT_EQ(calls->type, 0u); // libbpf knows no program type for SEC("test")
    // Three references to counts (lookup, update with BPF_NOEXIST, lookup again).
    std::multiset<map_ref> counts_refs{{vm::pseudo_map_idx, "counts", 0},
                                       {vm::pseudo_map_idx, "counts", 0},
                                       {vm::pseudo_map_idx, "counts", 0}};
    EXPECT_EQ(map_refs(obj, *calls), counts_refs);
    EXPECT_EQ(map_refs(obj, *array), (std::multiset<map_ref>{{vm::pseudo_map_idx, "totals", 0}}));
}

TEST(ElfLoader, RingbufMapsAndGlobalData) {
    elf_object obj = load(example("ringbuf_log"));
    const elf_map *events = find_map(obj, "events");
    const elf_map *rodata = find_map(obj, "ringbuf_.rodata");
    const elf_map *bss = find_map(obj, "ringbuf_.bss");
    ASSERT_TRUE(events && rodata && bss);
    EXPECT_EQ(events->spec.type, maps::map_type::ringbuf);
    EXPECT_EQ(events->spec.key_size, 0u);
    EXPECT_EQ(events->spec.value_size, 0u);
    EXPECT_EQ(events->spec.max_entries, 64u * 1024);
    EXPECT_FALSE(events->global_data);

    // const volatile __u32 sample_every = 1;
    EXPECT_TRUE(rodata->global_data);
    EXPECT_TRUE(rodata->read_only);
    EXPECT_EQ(rodata->spec.type, maps::map_type::array);
    EXPECT_EQ(rodata->spec.key_size, 4u);
    EXPECT_EQ(rodata->spec.value_size, 4u);
    EXPECT_EQ(rodata->spec.max_entries, 1u);
    EXPECT_EQ(rodata->initial_value, (std::vector<uint8_t>{1, 0, 0, 0}));
    // __u64 seq = 0;
    EXPECT_TRUE(bss->global_data);
    EXPECT_FALSE(bss->read_only);
    EXPECT_EQ(bss->initial_value, std::vector<uint8_t>(8, 0));

    std::multiset<map_ref> expected{{vm::pseudo_map_idx_value, "ringbuf_.bss", 0},
                                    {vm::pseudo_map_idx_value, "ringbuf_.rodata", 0},
                                    {vm::pseudo_map_idx, "events", 0}};
    for (const char *name : {"log_reserve", "log_output"}) {
        const elf_program *prog = find_program(obj, name);
        ASSERT_NE(prog, nullptr) << name;
        EXPECT_EQ(map_refs(obj, *prog), expected) << name;
    }
}

TEST(ElfLoader, SubprogAppendsCalleeAndRelocatesRodata) {
    elf_object obj = load(example("subprog"));
    ASSERT_EQ(obj.programs.size(), 1u); // has_prefix in .text is a subprogram
    const elf_program &prog = obj.programs[0];
    EXPECT_EQ(prog.name, "check_path");

    // Three calls, all to has_prefix, appended once right after the entry function.
    std::vector<int64_t> targets = local_targets(prog, vm::op_call, vm::call_local);
    ASSERT_EQ(targets.size(), 3u);
    int64_t callee = targets[0];
    EXPECT_TRUE(
        std::all_of(targets.begin(), targets.end(), [&](int64_t t) { return t == callee; }));
    ASSERT_GT(callee, 0);
    ASSERT_LT(callee, static_cast<int64_t>(prog.insns.size()));
    EXPECT_EQ(prog.insns[static_cast<size_t>(callee) - 1].opcode, vm::op_exit);
    EXPECT_EQ(prog.insns.back().opcode, vm::op_exit);

    // api_prefix and static_prefix through the .rodata section symbol plus an offset, the
    // "/health" literal through .rodata.str1.1.
    std::multiset<map_ref> expected{{vm::pseudo_map_idx_value, "subprog.rodata", 0},
                                    {vm::pseudo_map_idx_value, "subprog.rodata", 6},
                                    {vm::pseudo_map_idx_value, ".rodata.str1.1", 0}};
    EXPECT_EQ(map_refs(obj, prog), expected);
    const elf_map *rodata = find_map(obj, "subprog.rodata");
    ASSERT_NE(rodata, nullptr);
    ASSERT_EQ(rodata->initial_value.size(), 15u);
    EXPECT_EQ(std::memcmp(rodata->initial_value.data() + 6, "/static/", 9), 0);
    EXPECT_TRUE(rodata->read_only);
}

std::vector<uint8_t> path_context(const std::string &path) {
    std::vector<uint8_t> ctx(16, 0);
    std::memcpy(ctx.data(), path.data(), std::min(path.size(), ctx.size()));
    return ctx;
}

TEST(ElfLoader, SubprogRunsOnInterpreter) {
    elf_object obj = load(example("subprog"));
    ASSERT_EQ(obj.programs.size(), 1u);
    global_data globals(obj);
    const std::pair<const char *, uint64_t> cases[] = {
        {"/api/users", 0}, {"/static/app.js", 0}, {"/health", 0}, {"/healthz", 403},
        {"/admin", 403},   {"/ap", 403},          {"", 403},
    };
    for (const auto &[path, expected] : cases) {
        auto r = globals.run(obj.programs[0], path_context(path));
        ASSERT_TRUE(r) << path << ": " << r.err().message;
        EXPECT_EQ(*r, expected) << path;
    }
}

TEST(ElfLoader, CallsLinkNestedSharedAndCallbackCode) {
    elf_object obj = load(test_object("calls"));
    ASSERT_EQ(obj.maps.size(), 1u);
    EXPECT_EQ(obj.maps[0].name, "calls.data");
    EXPECT_FALSE(obj.maps[0].read_only);
    const elf_program *nested = find_program(obj, "nested");
    const elf_program *shared = find_program(obj, "shared");
    const elf_program *callback = find_program(obj, "with_callback");
    ASSERT_TRUE(nested && shared && callback);

    // nested -> middle -> leaf: middle calls leaf without a relocation (pc-relative in .text).
    EXPECT_EQ(local_targets(*nested, vm::op_call, vm::call_local).size(), 2u);
    // second_var is a .data variable at offset 8 (st_value), first_var at 0.
    EXPECT_EQ(map_refs(obj, *nested),
              (std::multiset<map_ref>{{vm::pseudo_map_idx_value, "calls.data", 8}}));
    EXPECT_EQ(map_refs(obj, *shared),
              (std::multiset<map_ref>{{vm::pseudo_map_idx_value, "calls.data", 0},
                                      {vm::pseudo_map_idx_value, "calls.data", 8}}));

    // The bpf_loop callback is appended and its address is a pc-relative code address.
    std::vector<int64_t> code = local_targets(*callback, vm::op_lddw, vm::pseudo_code_addr);
    ASSERT_EQ(code.size(), 1u);
    ASSERT_GT(code[0], 0);
    ASSERT_LT(code[0], static_cast<int64_t>(callback->insns.size()));
    EXPECT_EQ(callback->insns[static_cast<size_t>(code[0]) - 1].opcode, vm::op_exit);

    global_data globals(obj);
    auto r = globals.run(*nested, {});
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(*r, 24u); // middle(7) = leaf(7) + 1 = 7 * 3 + second_var + 1
    r = globals.run(*shared, {});
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(*r, 5u); // leaf(first_var) = 1 * 3 + 2
}

TEST(ElfLoader, CoreRelocationsOfLocalTypesStand) {
    elf_object obj = load(test_object("core_local"));
    ASSERT_EQ(obj.programs.size(), 1u);
    struct {
        uint32_t flags;
        uint64_t length;
    } request{0, 100};
    std::vector<uint8_t> mem(sizeof request);
    std::memcpy(mem.data(), &request, sizeof request);
    global_data globals(obj);
    auto r = globals.run(obj.programs[0], mem);
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(*r, 100u + sizeof request);
}

// The running kernel's configuration as text ("" when it cannot be read), read with zcat, not
// with the loader's code.
std::string kernel_config_text() {
    std::string text;
    FILE *p =
        popen("zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null", "r");
    if (p == nullptr) {
        return text;
    }
    char buf[4096];
    size_t n = 0;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) {
        text.append(buf, n);
    }
    pclose(p);
    return text;
}

// The value of NAME=VALUE in the configuration, or "".
std::string config_value(const std::string &config, const std::string &name) {
    std::string key = "\n" + name + "=";
    size_t at = ("\n" + config).find(key);
    if (at == std::string::npos) {
        return "";
    }
    size_t start = at + key.size() - 1, end = config.find('\n', start);
    return config.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// __kconfig externs: LINUX_* values as libbpf computes them, CONFIG_* options from the running
// kernel's configuration, weak unknown ones 0; all in a read-only .kconfig map.
TEST(ElfLoader, KconfigExterns) {
    elf_object obj = load(test_object("kconfig"));
    ASSERT_FALSE(obj.programs.empty());
    const elf_map *kconfig = nullptr;
    for (const elf_map &m : obj.maps) {
        if (m.name.ends_with(".kconfig")) {
            kconfig = &m;
        }
    }
    ASSERT_NE(kconfig, nullptr) << "no .kconfig map";
    EXPECT_TRUE(kconfig->global_data);
    EXPECT_TRUE(kconfig->read_only);
    EXPECT_EQ(kconfig->initial_value.size(), kconfig->spec.value_size);

    utsname u{};
    ASSERT_EQ(uname(&u), 0);
    unsigned major = 0, minor = 0, patch = 0;
    ASSERT_EQ(std::sscanf(u.release, "%u.%u.%u", &major, &minor, &patch), 3) << u.release;
    uint64_t version = (major << 16) + (minor << 8) + std::min(patch, 255u);
    std::string config = kernel_config_text();
    auto tristate = [&](const std::string &name) -> uint64_t {
        std::string v = config_value(config, name);
        return v == "y" ? 1 : v == "m" ? 2 : 0;
    };
    std::string hz = config_value(config, "CONFIG_HZ");
    std::string hostname = config_value(config, "CONFIG_DEFAULT_HOSTNAME");
    const std::pair<const char *, uint64_t> cases[] = {
        {"kernel_version", version},
        {"has_bpf_cookie", 1},
        {"has_syscall_wrapper", version >= (4u << 16) + (17u << 8) ? 1u : 0u},
        {"unknown_weak_value", 0},
        {"bpf_syscall", tristate("CONFIG_BPF_SYSCALL")},
        {"bpf_jit", tristate("CONFIG_BPF_JIT")},
        {"hz", hz.empty() ? 0 : std::stoull(hz)},
        {"hostname_first", hostname.size() > 2 ? static_cast<uint64_t>(hostname[1]) : 0},
        {"unknown_weak_option", 0},
    };
    global_data globals(obj);
    for (const auto &[name, expected] : cases) {
        const elf_program *prog = find_program(obj, name);
        ASSERT_NE(prog, nullptr) << name;
        auto r = globals.run(*prog, {});
        ASSERT_TRUE(r) << name << ": " << r.err().message;
        EXPECT_EQ(*r & 0xffffffff, expected) << name;
    }
    if (config.empty()) {
        std::printf("note: the kernel's configuration is not readable here; CONFIG_* gave 0\n");
    } else {
        EXPECT_NE(tristate("CONFIG_BPF_SYSCALL"), 0u) << "this kernel runs eBPF";
    }
}

// A tool's options set before load, as `bpftime load --set` and a skeleton's rodata pointer do:
// integers of each size and sign, a bool, a string, an array element, an enum, .data and .bss.
TEST(ElfLoader, GlobalsAreSetByNameBeforeLoad) {
    elf_object obj = load(test_object("options"));
    auto run = [&](const char *name) -> int64_t {
        global_data globals(obj);
        const elf_program *prog = find_program(obj, name);
        EXPECT_NE(prog, nullptr) << name;
        auto r = prog ? globals.run(*prog, {}) : result<uint64_t>(make_error(ENOENT, name));
        EXPECT_TRUE(r) << name << ": " << (r ? "" : r.err().message);
        return r ? static_cast<int32_t>(*r) : -1;
    };
    // The compiled-in values first.
    EXPECT_EQ(run("get_pid"), 0);
    EXPECT_EQ(run("get_min_us"), 10);
    EXPECT_EQ(run("get_comm"), 4 * 1000 + 'n');
    EXPECT_EQ(run("get_levels"), 1003);
    EXPECT_EQ(run("get_offset"), -1);
    EXPECT_EQ(run("get_data"), 5000);
    for (const char *set :
         {"targ_pid=4242", "min_us=0x500000007", "verbose=true", "comm=bash", "levels[2]=77",
          "levels[0]=9", "offset=-128", "mode=2", "initial=7", "counter=3"}) {
        auto r = set_global(obj, set);
        EXPECT_TRUE(r) << set << ": " << (r ? "" : r.err().message);
    }
    EXPECT_EQ(run("get_pid"), 4242);
    EXPECT_EQ(run("get_min_us"), 5 * 1000 + 7);
    EXPECT_EQ(run("get_verbose"), 1);
    EXPECT_EQ(run("get_comm"), 4 * 1000 + 'b');
    EXPECT_EQ(run("get_levels"), 9077);
    EXPECT_EQ(run("get_offset"), -128);
    EXPECT_EQ(run("get_mode"), 2);
    EXPECT_EQ(run("get_data"), 7003);
    // A shorter string leaves no byte of the longer one behind.
    ASSERT_TRUE(set_global(obj, "comm=ab"));
    EXPECT_EQ(run("get_comm"), 2 * 1000 + 'a');
}

TEST(ElfLoader, SettingGlobalsRefusesWhatDoesNotFit) {
    elf_object obj = load(test_object("options"));
    const std::pair<const char *, const char *> cases[] = {
        {"nope=1", "has no global variable of that name (it has: "},
        {"targ_pid", "--set takes NAME=VALUE"},
        {"=5", "--set takes NAME=VALUE"},
        {"targ_pid=2147483648", "does not fit in a signed 4-byte integer"},
        {"targ_pid=-2147483649", "does not fit in a signed 4-byte integer"},
        {"levels[1]=-1", "does not fit in an unsigned 4-byte integer"},
        {"offset=128", "does not fit in a signed 1-byte integer"},
        {"targ_pid=12abc", "'12abc' is not an integer"},
        {"verbose=2", "a bool is true, false, 0 or 1"},
        {"comm=0123456789abcdef", "has 16 bytes; it holds 15 and a NUL"},
        {"levels[4]=1", "index 4 is past its 4 elements"},
        {"levels=1", "set its elements by index, levels[0]=VALUE"},
        {"levels[x]=1", "the index is not a number"},
        {"targ_pid[0]=1", "not an array"},
        {"range=1", "only integers, bools, enums, char arrays and elements of integer arrays"},
    };
    const std::vector<elf_map> before = obj.maps;
    for (const auto &[set, message] : cases) {
        auto r = set_global(obj, set);
        ASSERT_FALSE(r) << set << " was accepted";
        EXPECT_NE(r.err().message.find(message), std::string::npos)
            << set << ": " << r.err().message;
    }
    // Nothing refused changed a byte.
    for (size_t i = 0; i < obj.maps.size(); i++) {
        EXPECT_EQ(obj.maps[i].initial_value, before[i].initial_value) << obj.maps[i].name;
    }
}

TEST(ElfLoader, EveryProgramValidates) {
    for (const std::string &path :
         {example("counter"), example("ringbuf_log"), example("subprog"), test_object("calls"),
          test_object("core_local"), test_object("kconfig")}) {
        elf_object obj = load(path);
        EXPECT_FALSE(obj.programs.empty()) << path;
        global_data globals(obj);
        for (const elf_program &prog : obj.programs) {
            auto r = vm::validate(prog.insns, globals.options());
            EXPECT_TRUE(r) << path << " " << prog.name << ": " << r.err().message << "\n"
                           << vm::disassemble(prog.insns, true);
            auto loaded = vm::program::load(prog.insns, globals.options());
            EXPECT_TRUE(loaded) << path << " " << prog.name << ": " << loaded.err().message;
        }
    }
}

TEST(ElfLoader, OpenMemoryMatchesOpenFile) {
    auto from_memory = open_elf_memory(read_file(example("counter")), "somewhere/counter.bpf.o");
    ASSERT_TRUE(from_memory) << from_memory.err().message;
    elf_object from_file = load(example("counter"));
    EXPECT_EQ(from_memory->path, "somewhere/counter.bpf.o");
    ASSERT_EQ(from_memory->maps.size(), from_file.maps.size());
    ASSERT_EQ(from_memory->programs.size(), from_file.programs.size());
    for (size_t i = 0; i < from_file.programs.size(); i++) {
        const auto &a = from_memory->programs[i].insns;
        const auto &b = from_file.programs[i].insns;
        ASSERT_EQ(a.size(), b.size());
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(vm::ebpf_inst)), 0);
    }
}

TEST(ElfLoader, GlobalDataMapsAreNamedAfterTheObject) {
    auto obj = open_elf_memory(read_file(example("subprog")), "/srv/filter.v2.o");
    ASSERT_TRUE(obj) << obj.err().message;
    EXPECT_NE(find_map(*obj, "filter.rodata"), nullptr);
}

} // namespace
} // namespace bpftime::loader
