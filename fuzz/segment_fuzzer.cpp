// SPDX-License-Identifier: MIT
// libFuzzer harness: segment images. The input is the whole segment: it is written into a
// fresh POSIX segment of its size, opened, and read the way commands and hosts read one:
// read_all, each object by id, map views (lookups, iteration, counts, ring-buffer consumption)
// and a host of the test attach type instantiating and running the links. The segment is
// shared memory any writer can damage, so no image may crash, hang or read outside the
// mapping; a refusal is the expected answer to a damaged image.
//
// Seeds: real segments (fuzz/corpus/segment, made by loading the example objects into small
// segments; see tests/security/segment_corpus_test.sh).
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/store/store.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace bpftime;

// Writes the image into a fresh segment; false when it cannot be made.
bool write_segment(const std::string &name, const uint8_t *data, size_t size) {
    std::string path = "/" + name;
    shm_unlink(path.c_str());
    int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        return false;
    }
    bool ok = ftruncate(fd, static_cast<off_t>(size)) == 0;
    for (size_t done = 0; ok && done < size;) {
        ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
        ok = n > 0;
        done += ok ? static_cast<size_t>(n) : 0;
    }
    close(fd);
    return ok;
}

void read_maps(store::segment &seg, const store::snapshot &snap) {
    for (const store::map_info &m : snap.maps) {
        auto view = seg.map_view(m.id);
        if (!view) {
            continue;
        }
        if (m.spec.type == maps::map_type::ringbuf) {
            (void)view->ringbuf_consume([](std::span<const uint8_t>) {}, 64);
            (void)view->ringbuf_dropped();
            continue;
        }
        (void)view->count();
        std::vector<uint8_t> key(m.spec.key_size, 0);
        (void)view->lookup(key.data());
        (void)view->read(key);
        // Iteration, bounded as `bpftime map dump` is by the map's entries.
        auto next = view->next_key({});
        for (uint32_t i = 0; i <= m.spec.max_entries && i < 256 && next && *next; i++) {
            (void)view->read(**next);
            next = view->next_key(**next);
        }
    }
}

void host(const std::shared_ptr<store::segment> &seg, const store::snapshot &snap) {
    // The interpreter: compiling every image's programs with the JIT would slow fuzzing down
    // and finds nothing about the segment.
    attach_manager mgr(seg, {.engine = vm::engine_kind::interpreter});
    auto impl = std::make_unique<callable_attach_impl>();
    callable_attach_impl &hooks = *impl;
    (void)mgr.register_attach_impl(attach_type_test, std::move(impl));
    (void)mgr.instantiate();
    uint8_t ctx[64] = {};
    for (const store::target_info &t : snap.targets) {
        (void)hooks.trigger(t.args, ctx, sizeof ctx);
    }
    mgr.deinstantiate();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const std::string name = "bpftime-segment-fuzz-" + std::to_string(getpid());
    if (size == 0 || size > (64u << 20) || !write_segment(name, data, size)) {
        return 0;
    }
    auto seg = store::segment::open(name, {.create = false, .wait_ms = 0});
    if (seg) {
        auto snap = (*seg)->read_all();
        if (snap) {
            for (const auto &p : snap->programs) {
                (void)(*seg)->program(p.id);
            }
            for (const auto &l : snap->links) {
                (void)(*seg)->link(l.id);
                (void)(*seg)->counters(l.id);
            }
            read_maps(**seg, *snap);
            host(*seg, *snap);
        }
    }
    shm_unlink(("/" + name).c_str());
    return 0;
}
