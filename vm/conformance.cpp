// SPDX-License-Identifier: MIT
// The bpf_conformance data format: `-- asm`, `-- raw`, `-- mem`, `-- result`, `-- error`.
#include "text.hpp"

#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/conformance.hpp>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bpftime::vm {
namespace {

int hex_digit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

result<uint64_t> parse_u64(std::string_view text) {
    text = trim(text);
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    if (text.empty()) {
        return make_error(EINVAL, "expected a number");
    }
    uint64_t v = 0;
    for (char c : text) {
        int d = hex_digit(c);
        if (d < 0 || d >= base) {
            return make_error(EINVAL, "bad digit '" + std::string(1, c) + "' in a number");
        }
        if (v > (UINT64_MAX - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base)) {
            return make_error(ERANGE, "number does not fit in 64 bits");
        }
        v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
    }
    return v;
}

struct section {
    std::string name;
    size_t first_line = 0; // 1-based line number of the first content line
    std::string body;
};

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

} // namespace

result<std::vector<uint8_t>> parse_hex_bytes(std::string_view text) {
    std::vector<uint8_t> out;
    int high = -1;
    for (size_t i = 0; i < text.size(); i++) {
        char c = text[i];
        if (std::isspace(static_cast<unsigned char>(c)) || c == ',' || c == ':') {
            if (high >= 0) {
                return make_error(EINVAL,
                                  "odd number of hex digits before offset " + std::to_string(i));
            }
            continue;
        }
        if (c == '0' && i + 1 < text.size() && (text[i + 1] == 'x' || text[i + 1] == 'X') &&
            high < 0) {
            i++;
            continue;
        }
        int d = hex_digit(c);
        if (d < 0) {
            return make_error(EINVAL, "'" + std::string(1, c) + "' at offset " + std::to_string(i) +
                                          " is not a hex digit");
        }
        if (high < 0) {
            high = d;
        } else {
            out.push_back(static_cast<uint8_t>(high << 4 | d));
            high = -1;
        }
    }
    if (high >= 0) {
        return make_error(EINVAL, "odd number of hex digits");
    }
    return out;
}

result<conformance_case> parse_conformance(std::string_view text, std::string name) {
    std::vector<section> sections;
    size_t line_no = 0;
    std::istringstream in{std::string(text)};
    for (std::string line; std::getline(in, line);) {
        line_no++;
        if (line.rfind("--", 0) == 0) {
            sections.push_back(
                {std::string(trim(std::string_view(line).substr(2))), line_no + 1, {}});
            continue;
        }
        if (!sections.empty()) {
            sections.back().body += line;
            sections.back().body += '\n';
        }
        // Text before the first section is a comment (licence header).
    }

    conformance_case c;
    c.name = std::move(name);
    bool have_program = false;
    for (const section &s : sections) {
        auto fail = [&](const std::string &why) {
            return make_error(EINVAL, "section '-- " + s.name + "' (line " +
                                          std::to_string(s.first_line - 1) + "): " + why);
        };
        if (s.name == "asm") {
            auto insns = assemble(s.body);
            if (!insns) {
                return fail(insns.err().message);
            }
            c.insns = std::move(*insns);
            have_program = true;
        } else if (s.name == "raw") {
            if (have_program) {
                continue; // `-- asm` and `-- raw` describe the same program
            }
            std::istringstream raw(s.body);
            for (std::string word; raw >> word;) {
                auto v = parse_u64(word);
                if (!v) {
                    return fail("'" + word + "': " + v.err().message);
                }
                c.insns.push_back(std::bit_cast<ebpf_inst>(*v));
            }
            have_program = true;
        } else if (s.name == "mem") {
            auto bytes = parse_hex_bytes(s.body);
            if (!bytes) {
                return fail(bytes.err().message);
            }
            c.mem = std::move(*bytes);
        } else if (s.name == "result") {
            auto v = parse_u64(s.body);
            if (!v) {
                return fail(v.err().message);
            }
            c.result = *v;
        } else if (s.name == "error") {
            c.error = std::string(trim(s.body));
        }
        // Other sections (`-- c`, `-- no register offset`) are notes.
    }
    if (!have_program) {
        return make_error(EINVAL, "no '-- asm' or '-- raw' section");
    }
    if (!c.result && !c.error) {
        return make_error(EINVAL, "no '-- result' or '-- error' section");
    }
    return c;
}

result<conformance_case> load_conformance_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return make_error(ENOENT, path + ": " + std::strerror(errno));
    }
    std::stringstream buf;
    buf << f.rdbuf();
    std::string name = path.substr(path.find_last_of('/') + 1);
    if (auto dot = name.rfind('.'); dot != std::string::npos) {
        name.resize(dot);
    }
    auto c = parse_conformance(buf.str(), name);
    if (!c) {
        return make_error(c.err().code, path + ": " + c.err().message);
    }
    return c;
}

conformance_outcome run_conformance(const conformance_case &c, engine_kind kind,
                                    const engine_options &opts) {
    using status = conformance_outcome::verdict;
    auto outcome_of_error = [&](const error &e) -> conformance_outcome {
        if (!c.error) {
            return {status::fail, e.message};
        }
        if (lower(e.message).find(lower(*c.error)) != std::string::npos) {
            return {status::pass, {}};
        }
        return {status::fail, "expected error '" + *c.error + "', got '" + e.message + "'"};
    };

    auto prog = program::load(c.insns);
    if (!prog) {
        return outcome_of_error(prog.err());
    }
    auto eng = make_engine(kind, *prog, opts);
    if (!eng) {
        return {status::skip, eng.err().message};
    }
    std::vector<uint8_t> mem = c.mem;
    auto r0 = (*eng)->run(mem.empty() ? nullptr : mem.data(), mem.size());
    if (!r0) {
        return outcome_of_error(r0.err());
    }
    if (c.error) {
        return {status::fail, "expected error '" + *c.error + "', got r0 = " + std::to_string(*r0)};
    }
    if (*r0 != *c.result) {
        char buf[96];
        snprintf(buf, sizeof buf, "expected r0 = 0x%llx, got 0x%llx",
                 static_cast<unsigned long long>(*c.result), static_cast<unsigned long long>(*r0));
        return {status::fail, buf};
    }
    return {status::pass, {}};
}

} // namespace bpftime::vm
