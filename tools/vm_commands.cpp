// SPDX-License-Identifier: MIT
// bpftime conformance | disasm | asm | run: programs from files, ELF objects or the store.
#include "cli.hpp"

#include <bpftime/helpers/helpers.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/conformance.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/helper_names.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace bpftime::cli {
namespace {

using namespace bpftime::vm;

// A program named on the command line: a file (assembler text, conformance data, raw bytes or
// an ELF object) or the id of a program in the store.
struct program_source {
    std::string label;
    std::vector<ebpf_inst> insns;
    std::optional<std::vector<uint8_t>> mem; // from a conformance file
    std::optional<loader::elf_object> elf;   // insns is then the chosen program's
    size_t elf_program = 0;
    std::optional<uint32_t> store_id;
};

bool looks_like_text(const std::string &data) {
    return std::all_of(data.begin(), data.end(), [](unsigned char c) {
        return c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c < 0x7f);
    });
}

bool is_id(const std::string &s) {
    return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), ::isdigit);
}

result<size_t> pick_program(const loader::elf_object &obj, const std::string &name) {
    std::string names;
    for (size_t i = 0; i < obj.programs.size(); i++) {
        if (obj.programs[i].name == name) {
            return i;
        }
        names += (names.empty() ? "" : ", ") + obj.programs[i].name;
    }
    if (name.empty() && obj.programs.size() == 1) {
        return size_t{0};
    }
    if (obj.programs.empty()) {
        return make_error(ENOENT, obj.path + " holds no programs");
    }
    return make_error(
        ENOENT, obj.path + (name.empty() ? " holds several programs" : " has no program " + name) +
                    "; pick one with --prog (" + names + ")");
}

result<program_source> load_source(const global_options &g, const std::string &what,
                                   const std::string &prog_name, bool need_one) {
    if (access(what.c_str(), F_OK) != 0 && is_id(what)) {
        if (g.kernel()) {
            return user_space_only("program " + what + ": run and disasm");
        }
        auto seg = open_store(g, false);
        if (!seg) {
            return seg.err();
        }
        auto p = (*seg)->program(static_cast<uint32_t>(std::stoul(what)));
        if (!p) {
            return p.err();
        }
        return program_source{"program " + what + " (" + p->name + ")",
                              p->insns,
                              std::nullopt,
                              std::nullopt,
                              0,
                              p->id};
    }
    auto data = read_file(what);
    if (!data) {
        return data.err();
    }
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t *>(data->data()), data->size());
    if (loader::looks_like_elf(bytes)) {
        auto obj = loader::open_elf(what);
        if (!obj) {
            return obj.err();
        }
        program_source src{what, {}, std::nullopt, std::move(*obj), 0, std::nullopt};
        if (need_one || !prog_name.empty()) {
            auto i = pick_program(*src.elf, prog_name);
            if (!i) {
                return i.err();
            }
            src.elf_program = *i;
            src.insns = src.elf->programs[*i].insns;
            src.label = what + ":" + src.elf->programs[*i].name;
        }
        return src;
    }
    if (!data->empty() && looks_like_text(*data)) {
        if (data->find("\n-- asm") != std::string::npos ||
            data->find("\n-- raw") != std::string::npos || data->rfind("-- ", 0) == 0) {
            auto c = parse_conformance(*data, what);
            if (!c) {
                return make_error(c.err().code, what + ": " + c.err().message);
            }
            return program_source{what, std::move(c->insns), std::move(c->mem)};
        }
        auto insns = assemble(*data);
        if (!insns) {
            return make_error(insns.err().code, what + ": " + insns.err().message);
        }
        return program_source{what, std::move(*insns)};
    }
    if (data->empty() || data->size() % sizeof(ebpf_inst) != 0) {
        return make_error(EINVAL, what + ": " + std::to_string(data->size()) +
                                      " bytes is not a whole number of 8-byte instructions");
    }
    program_source src{what};
    src.insns.resize(data->size() / sizeof(ebpf_inst));
    std::memcpy(static_cast<void *>(src.insns.data()), data->data(), data->size());
    return src;
}

result<engine_kind> pick_engine(const std::string &name) {
    if (name.empty()) {
        return available_engines().front();
    }
    auto kind = parse_engine_name(name);
    if (!kind) {
        return make_error(EINVAL, "unknown engine '" + name + "' (interp or jit)");
    }
    if (auto built = available_engines();
        std::find(built.begin(), built.end(), *kind) == built.end()) {
        return make_error(ENOTSUP, "this build has no " + name + " engine (use --engine interp)");
    }
    return *kind;
}

// The tier --jit-tier names, or fallback when it is not given.
result<jit_tier> pick_tier(const std::string &name, jit_tier fallback) {
    if (name.empty()) {
        return fallback;
    }
    auto tier = parse_jit_tier(name);
    if (!tier) {
        return make_error(EINVAL,
                          "unknown jit tier '" + name + "' (tiered, baseline or optimised)");
    }
    return *tier;
}

int cmd_conformance(const std::string &engine_opt, const std::string &tier_opt,
                    const std::vector<std::string> &files) {
    auto kind = pick_engine(engine_opt);
    if (!kind) {
        return report(kind.err());
    }
    auto tier = pick_tier(tier_opt, jit_tier::tiered);
    if (!tier) {
        return report(tier.err());
    }
    // Without --jit-tier the JIT must pass every case on both tiers a tiered engine runs.
    std::vector<jit_tier> tiers{*tier};
    if (tier_opt.empty() && *kind == engine_kind::jit) {
        tiers = {jit_tier::baseline, jit_tier::optimised};
    }
    size_t passed = 0, failed = 0, skipped = 0;
    for (const std::string &path : files) {
        auto c = load_conformance_file(path);
        if (!c) {
            std::printf("FAIL %s: %s\n", path.c_str(), c.err().message.c_str());
            failed++;
            continue;
        }
        conformance_outcome outcome;
        for (jit_tier t : tiers) {
            outcome = run_conformance(*c, *kind, engine_options{.tier = t});
            if (outcome.status != conformance_outcome::verdict::pass) {
                if (tiers.size() > 1) {
                    outcome.why = std::string(jit_tier_name(t)) + " tier: " + outcome.why;
                }
                break;
            }
        }
        switch (outcome.status) {
        case conformance_outcome::verdict::pass:
            std::printf("PASS %s\n", c->name.c_str());
            passed++;
            break;
        case conformance_outcome::verdict::fail:
            std::printf("FAIL %s: %s\n", c->name.c_str(), outcome.why.c_str());
            failed++;
            break;
        case conformance_outcome::verdict::skip:
            std::printf("SKIP %s: %s\n", c->name.c_str(), outcome.why.c_str());
            skipped++;
            break;
        }
    }
    std::printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    return failed == 0 ? 0 : 1;
}

// The disassembly with each helper call's Linux name as a comment ("call 1  # map_lookup_elem"),
// which the assembler skips; a helper bpftime lacks is said so.
std::string disassemble_named(std::span<const vm::ebpf_inst> insns, bool numbered) {
    helpers::register_all();
    std::string text = vm::disassemble(insns, numbered);
    std::string out;
    size_t pc = 0, at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
        at = end == std::string::npos ? text.size() : end + 1;
        if (pc < insns.size() && insns[pc].opcode == vm::op_call &&
            insns[pc].src == vm::call_helper) {
            const auto id = static_cast<uint32_t>(insns[pc].imm);
            std::string_view name = vm::linux_helper_name(id);
            if (!name.empty()) {
                line += "  # " + std::string(name);
                if (vm::helper_registry::global().find(id) == nullptr) {
                    line += " (not available in bpftime)";
                }
            }
        }
        out += line + "\n";
        // One line per instruction; an lddw's second slot has none.
        pc += pc < insns.size() && insns[pc].opcode == vm::op_lddw ? 2 : 1;
    }
    return out;
}

int cmd_disasm(const global_options &g, const std::string &what, const std::string &prog,
               bool numbered) {
    auto src = load_source(g, what, prog, false);
    if (!src) {
        return report(src.err());
    }
    if (src->elf && prog.empty()) {
        for (const loader::elf_program &p : src->elf->programs) {
            std::printf("%s (section %s):\n%s\n", p.name.c_str(), p.section.c_str(),
                        disassemble_named(p.insns, numbered).c_str());
        }
        return 0;
    }
    std::fputs(disassemble_named(src->insns, numbered).c_str(), stdout);
    return 0;
}

int cmd_asm(const global_options &g, const std::string &what, const std::string &out) {
    auto src = load_source(g, what, {}, true);
    if (!src) {
        return report(src.err());
    }
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(src->insns.data()),
            static_cast<std::streamsize>(src->insns.size() * sizeof(ebpf_inst)));
    if (!f) {
        return report(make_error(EIO, out + ": cannot write"));
    }
    return 0;
}

struct run_args {
    std::string engine;
    std::string mem_hex;
    std::string mem_file;
    std::string prog;
    uint64_t repeat = 0;
    uint64_t budget = run_options{}.instruction_budget;
    bool unchecked = false;
    std::string tier;
    std::string file;
};

// The program of a source compiled with real maps: from the store, or for an ELF object from
// a private segment that disappears with this process.
result<std::shared_ptr<const compiled_program>>
compile_source(const global_options &g, program_source &src, engine_kind kind,
               const engine_options &eopts, std::unique_ptr<event_provider_impl> &provider) {
    std::shared_ptr<store::segment> seg;
    if (src.store_id) {
        auto s = open_store(g, false);
        if (!s) {
            return s.err();
        }
        seg = *s;
    } else {
        std::string name = "bpftime-run-" + std::to_string(getpid());
        auto s = store::segment::open(name, {});
        if (!s) {
            return s.err();
        }
        (void)store::segment::remove(name); // the mapping stays; the name goes
        seg = *s;
    }
    // The caller keeps the provider: its manager owns the program's map handles.
    provider = std::make_unique<event_provider_impl>(seg, manager_options{kind, eopts});
    uint32_t id = 0;
    if (src.store_id) {
        id = *src.store_id;
    } else {
        auto loaded = load_object(*provider, *src.elf);
        if (!loaded) {
            return loaded.err();
        }
        id = loaded->programs[src.elf_program].first;
    }
    return provider->manager().compile(id);
}

int cmd_run(const global_options &g, const run_args &a) {
    auto kind = pick_engine(a.engine);
    if (!kind) {
        return report(kind.err());
    }
    // One run needs code at once; --repeat measures the code that runs in the long term.
    auto tier = pick_tier(a.tier, a.repeat > 0 ? jit_tier::optimised : jit_tier::baseline);
    if (!tier) {
        return report(tier.err());
    }
    helpers::register_all();
    auto src = load_source(g, a.file, a.prog, true);
    if (!src) {
        return report(src.err());
    }
    std::vector<uint8_t> mem = src->mem.value_or(std::vector<uint8_t>{});
    if (!a.mem_hex.empty()) {
        auto bytes = parse_hex_bytes(a.mem_hex);
        if (!bytes) {
            return report(make_error(EINVAL, "--mem: " + bytes.err().message));
        }
        mem = std::move(*bytes);
    } else if (!a.mem_file.empty()) {
        auto data = read_file(a.mem_file);
        if (!data) {
            return report(data.err());
        }
        mem.assign(data->begin(), data->end());
    }

    std::function<result<uint64_t>(void *, uint64_t, const run_options &)> run_once;
    std::unique_ptr<event_provider_impl> provider;
    std::shared_ptr<const compiled_program> compiled;
    std::optional<program> plain;
    std::unique_ptr<engine> eng;
    const engine_options eopts{.unchecked = a.unchecked, .tier = *tier};
    if (src->elf || src->store_id) {
        auto c = compile_source(g, *src, *kind, eopts, provider);
        if (!c) {
            return report(c.err());
        }
        compiled = *c;
        run_once = [&](void *m, uint64_t n, const run_options &o) {
            return compiled->run(m, n, o);
        };
    } else {
        auto prog = program::load(src->insns);
        if (!prog) {
            return report(make_error(prog.err().code, src->label + ": " + prog.err().message));
        }
        plain = std::move(*prog);
        auto e = make_engine(*kind, *plain, eopts);
        if (!e) {
            return report(e.err());
        }
        eng = std::move(*e);
        run_once = [&](void *m, uint64_t n, const run_options &o) { return eng->run(m, n, o); };
    }

    run_options opts;
    opts.instruction_budget = a.budget;
    void *mem_ptr = mem.empty() ? nullptr : mem.data();
    // --repeat N runs it N times in all (programs with maps write them on each run), r0 being
    // the first run's; the mean is over all N.
    const uint64_t runs = std::max<uint64_t>(a.repeat, 1);
    auto start = std::chrono::steady_clock::now();
    auto r0 = run_once(mem_ptr, mem.size(), opts);
    if (!r0) {
        return report(r0.err());
    }
    for (uint64_t i = 1; i < runs; i++) {
        if (auto r = run_once(mem_ptr, mem.size(), opts); !r) {
            return report(r.err());
        }
    }
    std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
    std::printf("r0 = 0x%llx\n", static_cast<unsigned long long>(*r0));
    if (a.repeat > 0) {
        std::printf("mean %.1f ns per run over %llu runs (%s engine)\n",
                    took.count() / static_cast<double>(runs), static_cast<unsigned long long>(runs),
                    engine_name(*kind));
    }
    return 0;
}

} // namespace

void add_vm_commands(CLI::App &app, const global_options &g, int &status) {
    static std::string engines_help = std::string("execution engine: interp or jit (default: "
                                                  "the fastest built, now ") +
                                      engine_name(available_engines().front()) + ")";

    auto *conf = app.add_subcommand("conformance", "run bpf_conformance data files");
    static const char *tier_help =
        "jit: tiered (baseline code at once, optimised code when ready), baseline or optimised "
        "(compiled before the first run); default: conformance checks baseline and optimised, "
        "run uses baseline, or optimised with --repeat";
    static std::string conf_engine;
    static std::vector<std::string> conf_files;
    static std::string conf_tier;
    conf->add_option("--engine", conf_engine, engines_help);
    conf->add_option("--jit-tier", conf_tier, tier_help);
    conf->add_option("FILE", conf_files, "conformance data files")->required();
    conf->callback([&status] { status = cmd_conformance(conf_engine, conf_tier, conf_files); });

    auto *dis = app.add_subcommand("disasm", "print a program as assembler text");
    static std::string dis_what, dis_prog;
    static bool numbered = false;
    dis->add_flag("-n,--numbered", numbered, "prefix each line with its slot index");
    dis->add_option("--prog", dis_prog, "the program of an ELF object (default: all)");
    dis->add_option("FILE", dis_what,
                    "assembler text, conformance data, raw bytes, an ELF object or a program id")
        ->required();
    dis->callback([&status, &g] { status = cmd_disasm(g, dis_what, dis_prog, numbered); });

    auto *as = app.add_subcommand("asm", "assemble a program into raw instruction bytes");
    static std::string as_file, as_out;
    as->add_option("FILE", as_file, "assembler text or conformance data")->required();
    as->add_option("-o,--output", as_out, "output file")->required();
    as->callback([&status, &g] { status = cmd_asm(g, as_file, as_out); });

    auto *run = app.add_subcommand("run", "run a program and print r0");
    static run_args ra;
    run->add_option("--engine", ra.engine, engines_help);
    auto *mem_opt = run->add_option("--mem", ra.mem_hex, "input memory as hex bytes");
    run->add_option("--mem-file", ra.mem_file, "input memory from a file")->excludes(mem_opt);
    run->add_option("--repeat", ra.repeat, "run it N times in all and print the mean time per run");
    run->add_option("--budget", ra.budget, "instruction budget of one run");
    run->add_option("--jit-tier", ra.tier, tier_help);
    run->add_flag("--unchecked", ra.unchecked,
                  "jit: no memory checks and no budget (trusted programs only: a bad access "
                  "crashes the process)");
    run->add_option("--prog", ra.prog, "the program of an ELF object");
    run->add_option("FILE", ra.file,
                    "assembler text, conformance data, raw bytes, an ELF object or a program id "
                    "in the store (runs against the store's maps)")
        ->required();
    run->callback([&status, &g] { status = cmd_run(g, ra); });
}

} // namespace bpftime::cli
