// SPDX-License-Identifier: MIT
// An application embedding bpftime through the installed C++ API: creates an array map and a
// program that adds the link's cookie to the map's counter, attaches it to a callable hook of
// this process, runs it three times and checks the program's results and the map's value.
// Usage: embed SEGMENT_NAME. Prints "embed: ok ..." and exits 0 when everything matched.
#include <bpftime/bpftime.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

int fail(const std::string &what, const bpftime::error &e) {
    std::fprintf(stderr, "embed: %s: %s\n", what.c_str(), e.message.c_str());
    return 1;
}

} // namespace

int main(int argc, char **argv) {
    using namespace bpftime;
    if (argc != 2) {
        std::fprintf(stderr, "usage: embed SEGMENT_NAME\n");
        return 2;
    }
    const std::string name = argv[1];
    auto seg = store::segment::open(name);
    if (!seg) {
        return fail("open segment " + name, seg.err());
    }
    int status = 1;
    {
        event_provider_impl provider(*seg);
        auto hooks = std::make_unique<callable_attach_impl>();
        callable_attach_impl &hook = *hooks;
        if (auto r = provider.manager().register_attach_impl(attach_type_test, std::move(hooks));
            !r) {
            return fail("register the test hook", r.err());
        }

        map_create_spec map;
        map.name = "total";
        map.spec.type = maps::map_type::array;
        map.spec.key_size = 4;
        map.spec.value_size = 8;
        map.spec.max_entries = 1;
        auto map_id = provider.create_map(map);
        if (!map_id) {
            return fail("create map", map_id.err());
        }
        // total[0] += cookie; returns cookie + 2.
        auto insns = vm::assemble("stw [%r10-4], 0\n"
                                  "mov %r2, %r10\n"
                                  "add %r2, -4\n"
                                  "lddw %r1, map_fd(0)\n"
                                  "call 1\n"
                                  "jeq %r0, 0, out\n"
                                  "mov %r6, %r0\n"
                                  "call 174\n"
                                  "lock add [%r6], %r0\n"
                                  "add %r0, 2\n"
                                  "exit\n"
                                  "out:\n"
                                  "mov %r0, 0\n"
                                  "exit\n");
        if (!insns) {
            return fail("assemble", insns.err());
        }
        (*insns)[3].imm = static_cast<int32_t>(*map_id);
        auto prog = provider.create_program({"add_cookie", 0, "", *insns, {*map_id}});
        if (!prog) {
            return fail("create program", prog.err());
        }
        auto target = provider.create_attach_target(*parse_attach_type("test"), "h");
        if (!target) {
            return fail("create target", target.err());
        }
        if (auto link = provider.attach_program(*prog, *target, 40); !link) {
            return fail("attach", link.err());
        }
        if (auto r = provider.instantiate(); !r) {
            return fail("instantiate", r.err());
        }

        std::vector<uint64_t> results;
        for (int i = 0; i < 3; i++) {
            auto runs = hook.trigger("h", nullptr, 0);
            if (runs.size() != 1) {
                std::fprintf(stderr, "embed: %zu programs ran at the hook, want 1\n", runs.size());
                return 1;
            }
            if (!runs[0]) {
                return fail("run", runs[0].err());
            }
            results.push_back(*runs[0]);
        }
        auto access = provider.open_map(*map_id);
        if (!access) {
            return fail("open map", access.err());
        }
        const uint8_t key[4] = {};
        auto value = (*access)->read(key);
        if (!value) {
            return fail("read map", value.err());
        }
        uint64_t total = 0;
        if (value->size() != sizeof total) {
            std::fprintf(stderr, "embed: the map value has %zu bytes, want 8\n", value->size());
            return 1;
        }
        std::memcpy(&total, value->data(), sizeof total);
        // The same value in place, through the map's view: its lookup is inline in the installed
        // headers, which compile here with warnings as errors.
        auto view = (*seg)->map_view(*map_id);
        if (!view) {
            return fail("map view", view.err());
        }
        const uint32_t index = 0;
        const auto *in_place = static_cast<const uint64_t *>(view->lookup(&index));
        if (in_place == nullptr || *in_place != total) {
            std::fprintf(stderr, "embed: the view's lookup does not find the map total\n");
            return 1;
        }
        provider.deinstantiate();
        if (results == std::vector<uint64_t>{42, 42, 42} && total == 120) {
            std::printf("embed: ok, results 42 42 42, map total %llu\n",
                        static_cast<unsigned long long>(total));
            status = 0;
        } else {
            std::fprintf(stderr,
                         "embed: results %llu %llu %llu (want 42 each), total %llu (want 120)\n",
                         static_cast<unsigned long long>(results[0]),
                         static_cast<unsigned long long>(results[1]),
                         static_cast<unsigned long long>(results[2]),
                         static_cast<unsigned long long>(total));
        }
    }
    if (auto r = store::segment::remove(name); !r) {
        return fail("remove segment", r.err());
    }
    return status;
}
