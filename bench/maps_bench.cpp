// SPDX-License-Identifier: MIT
// Map operation costs: bpftime's hash and array maps in a real shared memory mapping, beside a
// plain in-process std::unordered_map<uint32_t, uint64_t> doing the same operations in the
// same run. Prints Google Benchmark's table, then a summary with ratios (bpftime / std).
#include <bpftime/maps/maps.hpp>

#include "bench_util.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using namespace bpftime::maps;

const int64_t sizes[] = {1024, 65536};
const char *const operations[] = {"hash_lookup", "hash_update", "hash_insert_erase", "array_lookup",
                                  "array_update"};

// The order keys are used in: random, the same for every variant, cheap to step through.
struct key_order {
    key_order(uint32_t n, bool hashed) {
        std::mt19937 rng(42);
        for (uint32_t i = 0; i < n; i++) {
            keys.push_back(hashed ? i * 2654435761u : i);
        }
        for (auto &k : order) {
            k = keys[rng() % n];
        }
    }
    uint32_t next() { return order[pos++ & (order.size() - 1)]; }

    std::vector<uint32_t> keys;
    std::vector<uint32_t> order = std::vector<uint32_t>(4096);
    size_t pos = 0;
};

void die(const std::string &what) {
    std::fprintf(stderr, "maps_bench: %s\n", what.c_str());
    std::exit(1);
}

// A map in a POSIX shared memory object, as hosts map it.
class shm_map {
public:
    explicit shm_map(const map_spec &spec) {
        auto size = storage_size(spec, 1);
        if (!size) {
            die(size.err().message);
        }
        size_ = *size;
        std::string name = "/bpftime-maps-bench-" + std::to_string(getpid());
        int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, static_cast<off_t>(size_)) != 0) {
            die("cannot create " + name);
        }
        shm_unlink(name.c_str()); // the mapping outlives the name
        mem_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (mem_ == MAP_FAILED) {
            die("cannot map " + name);
        }
        if (auto ok = init_storage(mem_, size_, spec, 1); !ok) {
            die(ok.err().message);
        }
        auto v = map_view::open(mem_, size_, spec);
        if (!v) {
            die(v.err().message);
        }
        view_ = *v;
    }
    ~shm_map() { munmap(mem_, size_); }
    shm_map(const shm_map &) = delete;
    shm_map &operator=(const shm_map &) = delete;

    const map_view &operator*() const { return view_; }

private:
    void *mem_ = nullptr;
    uint64_t size_ = 0;
    map_view view_;
};

bool is_hash(const std::string &op) {
    return op.rfind("hash", 0) == 0;
}

void bm_bpftime(benchmark::State &state, std::string op) {
    auto n = static_cast<uint32_t>(state.range(0));
    bool hash = is_hash(op);
    shm_map m(map_spec{hash ? map_type::hash : map_type::array, 4, 8, hash ? n + 1 : n, 0});
    const map_view &v = *m;
    key_order keys(n, hash);
    uint64_t value = 1;
    for (uint32_t k : keys.keys) {
        v.update(&k, &value, update_any);
    }
    if (op.ends_with("lookup")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            benchmark::DoNotOptimize(*static_cast<uint64_t *>(v.lookup(&k)));
        }
    } else if (op.ends_with("update")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            benchmark::DoNotOptimize(v.update(&k, &value, update_any));
        }
    } else {
        uint32_t fresh = 7; // no key is 7: i * 2654435761 is never 7 for i < 2^16
        for (auto _ : state) {
            benchmark::DoNotOptimize(v.update(&fresh, &value, update_noexist));
            benchmark::DoNotOptimize(v.remove(&fresh));
        }
    }
}

void bm_std(benchmark::State &state, std::string op) {
    auto n = static_cast<uint32_t>(state.range(0));
    std::unordered_map<uint32_t, uint64_t> m;
    key_order keys(n, is_hash(op));
    for (uint32_t k : keys.keys) {
        m[k] = 1;
    }
    uint64_t value = 1;
    if (op.ends_with("lookup")) {
        for (auto _ : state) {
            benchmark::DoNotOptimize(m.find(keys.next())->second);
        }
    } else if (op.ends_with("update")) {
        for (auto _ : state) {
            benchmark::DoNotOptimize(m.insert_or_assign(keys.next(), value));
        }
    } else {
        for (auto _ : state) {
            benchmark::DoNotOptimize(m.emplace(7u, value));
            benchmark::DoNotOptimize(m.erase(7u));
        }
    }
}

void print_summary(const bpftime::bench::recording_reporter &r) {
    std::printf("\n%-18s %8s %10s %12s %8s\n", "operation", "entries", "std ns", "bpftime ns",
                "ratio");
    for (const char *op : operations) {
        for (int64_t n : sizes) {
            std::string suffix = "/" + std::to_string(n);
            auto s = r.time("BM_" + std::string(op) + "/std" + suffix);
            auto b = r.time("BM_" + std::string(op) + "/bpftime" + suffix);
            if (s && b) {
                std::printf("%-18s %8lld %10.1f %12.1f %7.1fx\n", op, static_cast<long long>(n), *s,
                            *b, *b / *s);
            }
        }
    }
}

} // namespace

int main(int argc, char **argv) {
    using bench_fn = void (*)(benchmark::State &, std::string);
    const std::pair<const char *, bench_fn> variants[] = {{"bpftime", bm_bpftime}, {"std", bm_std}};
    for (const char *op : operations) {
        for (auto [variant, fn] : variants) {
            auto *b = benchmark::RegisterBenchmark(
                ("BM_" + std::string(op) + "/" + variant).c_str(), fn, std::string(op));
            for (int64_t n : sizes) {
                b->Arg(n);
            }
        }
    }
    benchmark::Initialize(&argc, argv);
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_summary(reporter);
    benchmark::Shutdown();
    return 0;
}
