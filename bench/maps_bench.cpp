// SPDX-License-Identifier: MIT
// Map operation costs: bpftime's hash and array maps in a real shared memory mapping, beside an
// in-process baseline doing the same operations on the same keys in the same run, from one
// thread and from two threads sharing one map. Prints Google Benchmark's table, then a summary
// with ratios (bpftime / baseline), medians of interleaved repetitions.
//
// Baselines: hashes are a std::unordered_map<uint32_t, uint64_t>, unlocked from one thread and
// behind a std::shared_mutex from two (lookups shared, updates exclusive: what a program sharing
// one unordered_map between threads needs); arrays are a plain std::vector<uint64_t> read or
// written with its bounds check (relaxed atomic stores from two threads: plain moves on x86-64).
#include <bpftime/maps/maps.hpp>

#include "bench_util.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using namespace bpftime::maps;

const int64_t sizes[] = {1024, 65536};
const int thread_counts[] = {1, 2};
const char *const operations[] = {"hash_lookup", "hash_update", "hash_insert_erase", "array_lookup",
                                  "array_update"};
// Keys inserted and erased again by thread t (insert_erase): never one of a map's keys (checked).
const uint32_t fresh_keys[] = {7, 11};

void die(const std::string &what) {
    std::fprintf(stderr, "maps_bench: %s\n", what.c_str());
    std::exit(1);
}

// The keys of a map of n entries, spread over 32 bits for hashes.
std::vector<uint32_t> keys_of(uint32_t n, bool hashed) {
    std::vector<uint32_t> keys;
    for (uint32_t i = 0; i < n; i++) {
        keys.push_back(hashed ? i * 2654435761u : i);
    }
    return keys;
}

// The order a thread uses keys in: random, the same for every variant, cheap to step through.
struct key_order {
    key_order(const std::vector<uint32_t> &keys, int thread) {
        std::mt19937 rng(42 + thread);
        for (auto &k : order) {
            k = keys[rng() % keys.size()];
        }
    }
    uint32_t next() { return order[pos++ & (order.size() - 1)]; }

    std::vector<uint32_t> order = std::vector<uint32_t>(4096);
    size_t pos = 0;
};

// A map in a POSIX shared memory object, as hosts map it.
class shm_map {
public:
    explicit shm_map(const map_spec &spec) {
        auto size = storage_size(spec, 1);
        if (!size) {
            die(size.err().message);
        }
        size_ = *size;
        static int counter = 0;
        std::string name =
            "/bpftime-maps-bench-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
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

// Everything the threads of one benchmark share, made before any benchmark runs (the threads of
// a Google Benchmark start their loops together, not their set-up).
struct fixture {
    explicit fixture(uint32_t n)
        : hash_keys(keys_of(n, true)), array_keys(keys_of(n, false)),
          hash(map_spec{map_type::hash, 4, 8, n + 2, 0}),
          array(map_spec{map_type::array, 4, 8, n, 0}), vec(n, 1) {
        uint64_t one = 1;
        for (uint32_t k : hash_keys) {
            if ((*hash).update(&k, &one, update_any) != 0) {
                die("cannot fill the hash map");
            }
            std_hash[k] = 1;
            for (uint32_t fresh : fresh_keys) {
                if (k == fresh) {
                    die("a fresh key is one of the map's keys");
                }
            }
        }
    }

    std::vector<uint32_t> hash_keys, array_keys;
    shm_map hash, array;
    std::unordered_map<uint32_t, uint64_t> std_hash;
    std::shared_mutex std_hash_lock;
    std::vector<uint64_t> vec;
};

std::map<uint32_t, std::unique_ptr<fixture>> fixtures;

// A lookup's value as a program uses it: loaded into a register (DoNotOptimize may take the
// value's memory as its operand and load nothing).
[[gnu::always_inline]] inline void use_value(uint64_t value) {
    asm volatile("" : "+r"(value)::"memory");
}

bool is_hash(const std::string &op) {
    return op.rfind("hash", 0) == 0;
}

void bm_bpftime(benchmark::State &state, std::string op) {
    fixture &f = *fixtures.at(static_cast<uint32_t>(state.range(0)));
    const bool hash = is_hash(op);
    const map_view &v = hash ? *f.hash : *f.array;
    key_order keys(hash ? f.hash_keys : f.array_keys, state.thread_index());
    uint64_t value = 1;
    if (op.ends_with("lookup")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            use_value(*static_cast<uint64_t *>(v.lookup(&k)));
        }
    } else if (op.ends_with("update")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            benchmark::DoNotOptimize(v.update(&k, &value, update_any));
        }
    } else {
        uint32_t fresh = fresh_keys[state.thread_index()];
        for (auto _ : state) {
            benchmark::DoNotOptimize(v.update(&fresh, &value, update_noexist));
            benchmark::DoNotOptimize(v.remove(&fresh));
        }
    }
}

void bm_std_hash(benchmark::State &state, const std::string &op) {
    fixture &f = *fixtures.at(static_cast<uint32_t>(state.range(0)));
    auto &m = f.std_hash;
    const bool locked = state.threads() > 1;
    key_order keys(f.hash_keys, state.thread_index());
    uint64_t value = 1;
    if (op.ends_with("lookup")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            if (locked) {
                std::shared_lock lock(f.std_hash_lock);
                use_value(m.find(k)->second);
            } else {
                use_value(m.find(k)->second);
            }
        }
    } else if (op.ends_with("update")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            if (locked) {
                std::unique_lock lock(f.std_hash_lock);
                benchmark::DoNotOptimize(m.insert_or_assign(k, value));
            } else {
                benchmark::DoNotOptimize(m.insert_or_assign(k, value));
            }
        }
    } else {
        uint32_t fresh = fresh_keys[state.thread_index()];
        for (auto _ : state) {
            if (locked) {
                std::unique_lock lock(f.std_hash_lock);
                benchmark::DoNotOptimize(m.emplace(fresh, value));
                benchmark::DoNotOptimize(m.erase(fresh));
            } else {
                benchmark::DoNotOptimize(m.emplace(fresh, value));
                benchmark::DoNotOptimize(m.erase(fresh));
            }
        }
    }
}

void bm_std_array(benchmark::State &state, const std::string &op) {
    fixture &f = *fixtures.at(static_cast<uint32_t>(state.range(0)));
    std::vector<uint64_t> &vec = f.vec;
    key_order keys(f.array_keys, state.thread_index());
    uint64_t value = 1;
    if (op.ends_with("lookup")) {
        for (auto _ : state) {
            uint32_t k = keys.next();
            use_value(k < vec.size() ? vec[k] : 0);
        }
    } else {
        for (auto _ : state) {
            uint32_t k = keys.next();
            if (k < vec.size()) {
                std::atomic_ref<uint64_t>(vec[k]).store(value, std::memory_order_relaxed);
            }
            benchmark::ClobberMemory();
        }
    }
}

void bm_std(benchmark::State &state, std::string op) {
    if (is_hash(op)) {
        bm_std_hash(state, op);
    } else {
        bm_std_array(state, op);
    }
}

std::string run_name(const std::string &op, const char *variant, int64_t n, int threads) {
    return "BM_" + op + "/" + variant + "/" + std::to_string(n) +
           (threads > 1 ? "/real_time/threads:" + std::to_string(threads) : "");
}

void print_summary(const bpftime::bench::recording_reporter &r) {
    std::printf("\n%-18s %8s %8s %12s %12s %8s\n", "operation", "entries", "threads", "baseline ns",
                "bpftime ns", "ratio");
    for (const char *op : operations) {
        for (int threads : thread_counts) {
            for (int64_t n : sizes) {
                // The median of the repetitions when there were several.
                auto time = [&](const char *variant) {
                    std::string name = run_name(op, variant, n, threads);
                    auto median = r.time(name + "_median");
                    return median ? median : r.time(name);
                };
                auto s = time("std");
                auto b = time("bpftime");
                if (s && b) {
                    std::printf("%-18s %8lld %8d %12.1f %12.1f %7.2fx\n", op,
                                static_cast<long long>(n), threads, *s, *b, *b / *s);
                }
            }
        }
    }
}

} // namespace

int main(int argc, char **argv) {
    for (int64_t n : sizes) {
        fixtures[static_cast<uint32_t>(n)] = std::make_unique<fixture>(static_cast<uint32_t>(n));
    }
    using bench_fn = void (*)(benchmark::State &, std::string);
    const std::pair<const char *, bench_fn> variants[] = {{"bpftime", bm_bpftime}, {"std", bm_std}};
    for (const char *op : operations) {
        for (auto [variant, fn] : variants) {
            for (int threads : thread_counts) {
                auto *b = benchmark::RegisterBenchmark(
                    ("BM_" + std::string(op) + "/" + variant).c_str(), fn, std::string(op));
                for (int64_t n : sizes) {
                    b->Arg(n);
                }
                if (threads > 1) {
                    b->Threads(threads)->UseRealTime();
                }
            }
        }
    }
    // Repetitions interleaved at random with medians, unless the command line says otherwise: on
    // a busy machine a variant measured apart from its baseline meets other load.
    std::vector<char *> args(argv, argv + argc);
    std::string reps = "--benchmark_repetitions=5";
    std::string interleave = "--benchmark_enable_random_interleaving=true";
    std::string aggregates = "--benchmark_report_aggregates_only=true";
    bool chose = false;
    for (int i = 1; i < argc; i++) {
        chose = chose || std::string(argv[i]).starts_with("--benchmark_repetitions");
    }
    if (!chose) {
        args.insert(args.begin() + 1, {reps.data(), interleave.data(), aggregates.data()});
    }
    int count = static_cast<int>(args.size());
    benchmark::Initialize(&count, args.data());
    bpftime::bench::recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    print_summary(reporter);
    benchmark::Shutdown();
    return 0;
}
