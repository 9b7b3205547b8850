// SPDX-License-Identifier: MIT
// Cost of the nginx URL filter per request through the C API nginx calls, beside the same call
// with no program attached, in one run.
#include "bench_util.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/minimal_syscall_server.h>
#include <bpftime/provider/event_provider.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <unistd.h>

namespace {

using namespace bpftime;

struct fixture {
    std::string name = "bpftime-server-bench-" + std::to_string(getpid());
    std::shared_ptr<store::segment> seg;
    std::unique_ptr<event_provider_impl> provider;
    bpftime_server *server = nullptr;

    explicit fixture(bool with_program) {
        (void)store::segment::remove(name);
        seg = *store::segment::open(name);
        provider = std::make_unique<event_provider_impl>(seg);
        if (with_program) {
            auto obj = loader::open_elf(std::string(BPFTIME_EXAMPLES_DIR) + "/url_allowlist.bpf.o");
            auto loaded = load_object(*provider, *obj);
            uint32_t map = loaded->maps.at(0).first;
            std::vector<uint8_t> key(32);
            std::memcpy(key.data(), "/api/", 5);
            uint32_t allow = 0;
            (void)seg->map_view(map)->write(key, {reinterpret_cast<uint8_t *>(&allow), 4});
            auto target = provider->create_attach_target(attach_type_nginx_url, "");
            (void)provider->attach_program(loaded->programs.at(0).first, *target);
        }
        bpftime_server__create(name.c_str(), nullptr, nullptr, &server);
    }
    ~fixture() {
        bpftime_server__destroy(server);
        (void)store::segment::remove(name);
    }
};

void bm_filter(benchmark::State &state, bool with_program) {
    fixture f(with_program);
    std::string path = "/api/users/42", method = "GET", client = "127.0.0.1";
    bpftime_nginx_request req{};
    req.path = req.uri = path.data();
    req.path_len = req.uri_len = static_cast<uint32_t>(path.size());
    req.method = method.data();
    req.method_len = 3;
    req.client = client.data();
    req.client_len = static_cast<uint32_t>(client.size());
    if (bpftime_server__filter_request(f.server, &req) != 0) {
        state.SkipWithError("the request is not accepted");
        return;
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize(bpftime_server__filter_request(f.server, &req));
    }
}

} // namespace

int main(int argc, char **argv) {
    benchmark::RegisterBenchmark("filter/no_program", bm_filter, false);
    benchmark::RegisterBenchmark("filter/url_allowlist", bm_filter, true);
    benchmark::Initialize(&argc, argv);
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    auto none = reporter.time("filter/no_program");
    auto allow = reporter.time("filter/url_allowlist");
    if (none && allow) {
        std::printf("\nfilter per request: %.1f ns with url_allowlist, %.1f ns with nothing "
                    "attached (%.1f ns for the program)\n",
                    *allow, *none, *allow - *none);
    }
    benchmark::Shutdown();
    return 0;
}
