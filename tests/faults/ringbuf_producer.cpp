// SPDX-License-Identifier: MIT
// A ring buffer producer in a process of its own, as a host is one, for the dead-producer
// tests:
//   ringbuf_producer SEGMENT MAP_ID hold       reserves a record, prints "reserved" and waits
//                                              (never submitting) until it is killed
//   ringbuf_producer SEGMENT MAP_ID submit K   submits K 8-byte records holding 1..K
#include <bpftime/maps/maps.hpp>
#include <bpftime/store/store.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s SEGMENT MAP_ID hold|submit K\n", argv[0]);
        return 2;
    }
    auto seg = bpftime::store::segment::open(argv[1], {.create = false, .wait_ms = 0});
    if (!seg) {
        std::fprintf(stderr, "segment %s: %s\n", argv[1], seg.err().message.c_str());
        return 1;
    }
    auto view = (*seg)->map_view(static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 0)));
    if (!view) {
        std::fprintf(stderr, "map %s: %s\n", argv[2], view.err().message.c_str());
        return 1;
    }
    if (std::string(argv[3]) == "hold") {
        void *record = view->ringbuf_reserve(sizeof(uint64_t));
        if (record == nullptr) {
            std::fprintf(stderr, "map %s: no room to reserve a record\n", argv[2]);
            return 1;
        }
        uint64_t never = 0xdeaddeaddeaddeadull;
        std::memcpy(record, &never, sizeof never);
        std::puts("reserved");
        std::fflush(stdout);
        for (;;) {
            pause();
        }
    }
    if (std::string(argv[3]) == "submit" && argc == 5) {
        uint64_t count = std::strtoull(argv[4], nullptr, 0);
        for (uint64_t i = 1; i <= count; i++) {
            void *record = view->ringbuf_reserve(sizeof(uint64_t));
            if (record == nullptr) {
                std::fprintf(stderr, "map %s: no room for record %llu\n", argv[2],
                             static_cast<unsigned long long>(i));
                return 1;
            }
            std::memcpy(record, &i, sizeof i);
            view->ringbuf_submit(record, 0);
        }
        std::printf("submitted %llu\n", static_cast<unsigned long long>(count));
        return 0;
    }
    std::fprintf(stderr, "usage: %s SEGMENT MAP_ID hold|submit K\n", argv[0]);
    return 2;
}
