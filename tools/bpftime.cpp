// SPDX-License-Identifier: MIT
// The bpftime command line.
#include <bpftime/bpftime.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

using namespace bpftime;
using namespace bpftime::vm;

// A program read from a file, with input memory when the file carries some.
struct program_file {
    std::vector<ebpf_inst> insns;
    std::optional<std::vector<uint8_t>> mem;
};

result<std::string> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return make_error(ENOENT, path + ": " + std::strerror(errno));
    }
    std::stringstream buf;
    buf << f.rdbuf();
    return buf.str();
}

bool looks_like_text(const std::string &data) {
    return std::all_of(data.begin(), data.end(), [](unsigned char c) {
        return c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c < 0x7f);
    });
}

// Reads assembler text, a conformance data file, or raw instruction bytes.
result<program_file> load_program_file(const std::string &path) {
    auto data = read_file(path);
    if (!data) {
        return std::move(data).err();
    }
    if (data->rfind("\x7f"
                    "ELF",
                    0) == 0) {
        return make_error(ENOTSUP, path + ": ELF objects are not supported by this build yet");
    }
    if (!data->empty() && looks_like_text(*data)) {
        if (data->find("\n-- asm") != std::string::npos ||
            data->find("\n-- raw") != std::string::npos || data->rfind("-- ", 0) == 0) {
            auto c = parse_conformance(*data, path);
            if (!c) {
                return make_error(c.err().code, path + ": " + c.err().message);
            }
            return program_file{std::move(c->insns), std::move(c->mem)};
        }
        auto insns = assemble(*data);
        if (!insns) {
            return make_error(insns.err().code, path + ": " + insns.err().message);
        }
        return program_file{std::move(*insns), std::nullopt};
    }
    if (data->empty() || data->size() % sizeof(ebpf_inst) != 0) {
        return make_error(EINVAL, path + ": " + std::to_string(data->size()) +
                                      " bytes is not a whole number of 8-byte instructions");
    }
    program_file pf;
    pf.insns.resize(data->size() / sizeof(ebpf_inst));
    std::memcpy(static_cast<void *>(pf.insns.data()), data->data(), data->size());
    return pf;
}

result<engine_kind> pick_engine(const std::string &name) {
    if (name.empty()) {
        return available_engines().front();
    }
    auto kind = parse_engine_name(name);
    if (!kind) {
        return make_error(EINVAL, "unknown engine '" + name + "' (interp or jit)");
    }
    return *kind;
}

int report(const error &e) {
    std::fprintf(stderr, "bpftime: %s\n", e.message.c_str());
    return 1;
}

int cmd_conformance(const std::string &engine_name_opt, const std::vector<std::string> &files) {
    auto kind = pick_engine(engine_name_opt);
    if (!kind) {
        return report(kind.err());
    }
    size_t passed = 0, failed = 0, skipped = 0;
    for (const std::string &path : files) {
        auto c = load_conformance_file(path);
        if (!c) {
            std::printf("FAIL %s: %s\n", path.c_str(), c.err().message.c_str());
            failed++;
            continue;
        }
        auto outcome = run_conformance(*c, *kind);
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

int cmd_disasm(const std::string &path, bool numbered) {
    auto pf = load_program_file(path);
    if (!pf) {
        return report(pf.err());
    }
    std::fputs(disassemble(pf->insns, numbered).c_str(), stdout);
    return 0;
}

int cmd_asm(const std::string &path, const std::string &out) {
    auto pf = load_program_file(path);
    if (!pf) {
        return report(pf.err());
    }
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(pf->insns.data()),
            static_cast<std::streamsize>(pf->insns.size() * sizeof(ebpf_inst)));
    if (!f) {
        return report(make_error(EIO, out + ": cannot write"));
    }
    return 0;
}

struct run_args {
    std::string engine;
    std::string mem_hex;
    std::string mem_file;
    uint64_t repeat = 0;
    uint64_t budget = run_options{}.instruction_budget;
    std::string file;
};

int cmd_run(const run_args &a) {
    auto kind = pick_engine(a.engine);
    if (!kind) {
        return report(kind.err());
    }
    auto pf = load_program_file(a.file);
    if (!pf) {
        return report(pf.err());
    }
    std::vector<uint8_t> mem = pf->mem.value_or(std::vector<uint8_t>{});
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
    auto prog = program::load(std::move(pf->insns));
    if (!prog) {
        return report(make_error(prog.err().code, a.file + ": " + prog.err().message));
    }
    auto eng = make_engine(*kind, *prog);
    if (!eng) {
        return report(eng.err());
    }
    run_options opts;
    opts.instruction_budget = a.budget;
    void *mem_ptr = mem.empty() ? nullptr : mem.data();
    auto r0 = (*eng)->run(mem_ptr, mem.size(), opts);
    if (!r0) {
        return report(r0.err());
    }
    std::printf("r0 = 0x%llx\n", static_cast<unsigned long long>(*r0));
    if (a.repeat > 0) {
        auto start = std::chrono::steady_clock::now();
        for (uint64_t i = 0; i < a.repeat; i++) {
            auto r = (*eng)->run(mem_ptr, mem.size(), opts);
            if (!r) {
                return report(r.err());
            }
        }
        std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
        std::printf("mean %.1f ns per run over %llu runs (%s engine)\n",
                    took.count() / static_cast<double>(a.repeat),
                    static_cast<unsigned long long>(a.repeat), engine_name(*kind));
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    CLI::App app{"bpftime: eBPF programs in user-space processes"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "bpftime 0.1.0");
    int status = 0;

    std::string engines_help = "execution engine: interp or jit (default: fastest built, now ";
    engines_help += engine_name(available_engines().front());
    engines_help += ")";

    auto *conf = app.add_subcommand("conformance", "run bpf_conformance data files");
    std::string conf_engine;
    std::vector<std::string> conf_files;
    conf->add_option("--engine", conf_engine, engines_help);
    conf->add_option("FILE", conf_files, "conformance data files")->required();
    conf->callback([&] { status = cmd_conformance(conf_engine, conf_files); });

    auto *dis = app.add_subcommand("disasm", "print a program as assembler text");
    std::string dis_file;
    bool numbered = false;
    dis->add_flag("-n,--numbered", numbered, "prefix each line with its slot index");
    dis->add_option("FILE", dis_file, "assembler text, conformance data or raw bytes")->required();
    dis->callback([&] { status = cmd_disasm(dis_file, numbered); });

    auto *as = app.add_subcommand("asm", "assemble a program into raw instruction bytes");
    std::string as_file, as_out;
    as->add_option("FILE", as_file, "assembler text or conformance data")->required();
    as->add_option("-o,--output", as_out, "output file")->required();
    as->callback([&] { status = cmd_asm(as_file, as_out); });

    auto *run = app.add_subcommand("run", "run a program and print r0");
    run_args ra;
    run->add_option("--engine", ra.engine, engines_help);
    auto *mem_opt = run->add_option("--mem", ra.mem_hex, "input memory as hex bytes");
    run->add_option("--mem-file", ra.mem_file, "input memory from a file")->excludes(mem_opt);
    run->add_option("--repeat", ra.repeat, "run N more times and print the mean time per run");
    run->add_option("--budget", ra.budget, "instruction budget of one run");
    run->add_option("FILE", ra.file, "assembler text, conformance data or raw bytes")->required();
    run->callback([&] { status = cmd_run(ra); });

    CLI11_PARSE(app, argc, argv);
    return status;
}
