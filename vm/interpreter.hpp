// SPDX-License-Identifier: MIT
// The interpreter engine (private to the VM component).
#pragma once

#include <bpftime/vm/vm.hpp>

namespace bpftime::vm {

class interpreter final : public engine {
public:
    explicit interpreter(const program &prog);
    result<uint64_t> run(void *mem, uint64_t mem_len, const run_options &opts) override;
    engine_kind kind() const override { return engine_kind::interpreter; }

private:
    const program &prog_;
};

} // namespace bpftime::vm
