// SPDX-License-Identifier: MIT
/// @file
/// The bpf_conformance data file format and a runner over the execution engines.
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>
#include <bpftime/vm/vm.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bpftime::vm {

/// One conformance case: a program, its input memory and what it must give.
struct conformance_case {
    std::string name;                 ///< the file name without folder and extension
    std::vector<ebpf_inst> insns;     ///< from `-- asm` or `-- raw`
    std::vector<uint8_t> mem;         ///< from `-- mem`
    std::optional<uint64_t> result;   ///< from `-- result`
    std::optional<std::string> error; ///< from `-- error`
};

/// Parses the text of a conformance file. An error names the line and the reason.
result<conformance_case> parse_conformance(std::string_view text, std::string name = {});

/// Reads and parses a conformance file.
result<conformance_case> load_conformance_file(const std::string &path);

/// The outcome of one case on one engine.
struct conformance_outcome {
    enum class verdict { pass, fail, skip };
    verdict status = verdict::fail;
    std::string why; ///< empty on pass
};

/// Loads and runs a case on an engine and compares with its expectation.
conformance_outcome run_conformance(const conformance_case &c, engine_kind kind,
                                    const engine_options &opts = {});

/// Parses hex bytes as written in `-- mem` sections and `--mem` options ("aa bb 11", "aabb11",
/// "0xaa 0xbb"). An error says which character is wrong.
result<std::vector<uint8_t>> parse_hex_bytes(std::string_view text);

} // namespace bpftime::vm
