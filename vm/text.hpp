// SPDX-License-Identifier: MIT
// Small text helpers shared by the VM's parsers and messages (private to vm/).
#pragma once

#include <cctype>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace bpftime::vm {

inline bool is_space(char c) {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_space(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

/// "0x" and the lowercase hex digits of v.
inline std::string hex(uint64_t v) {
    char buf[16];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, 16);
    return "0x" + std::string(buf, end);
}

} // namespace bpftime::vm
