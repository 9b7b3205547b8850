// SPDX-License-Identifier: MIT
// For tests: writes into a segment what `bpftime` itself refuses, as a controller that skips
// the checks would (an older bpftime, a hostile one), so that tests can show what hosts do then.
//
//   store_writer SEGMENT uncompilable-link   an enabled nginx-url link running a program no host
//                                            can compile (an lddw whose src is 3); prints
//                                            "link ID program ID"
#include <bpftime/attach/attach.hpp>
#include <bpftime/store/store.hpp>

#include <cstdio>
#include <cstring>

using namespace bpftime;

int main(int argc, char **argv) {
    if (argc != 3 || std::strcmp(argv[2], "uncompilable-link") != 0) {
        std::fprintf(stderr, "usage: %s SEGMENT uncompilable-link\n", argv[0]);
        return 2;
    }
    auto seg = store::segment::open(argv[1], {.create = false});
    if (!seg) {
        std::fprintf(stderr, "store_writer: %s\n", seg.err().message.c_str());
        return 1;
    }
    std::vector<vm::ebpf_inst> insns{
        {vm::op_lddw, 0, vm::pseudo_var_addr, 0, 1}, {}, {vm::op_exit, 0, 0, 0, 0}};
    auto prog = (*seg)->create_program("var_addr", 0, "nginx", insns, {});
    auto target = (*seg)->create_target("nginx-url", attach_type_nginx_url, "");
    if (!prog || !target) {
        std::fprintf(stderr, "store_writer: %s\n",
                     (!prog ? prog.err() : target.err()).message.c_str());
        return 1;
    }
    auto link = (*seg)->create_link("link", *prog, *target, true);
    if (!link) {
        std::fprintf(stderr, "store_writer: %s\n", link.err().message.c_str());
        return 1;
    }
    std::printf("link %u program %u\n", *link, *prog);
    return 0;
}
