// SPDX-License-Identifier: MIT
// Replays saved inputs through a fuzzer's LLVMFuzzerTestOneInput without libFuzzer, so that any
// compiler builds it and CTest can run a saved corpus.
//
// Usage: REPLAY PATH... where each PATH is a file or a folder (its regular files, in name
// order). A harness reports a problem by crashing (a trap after printing what differed, a
// sanitizer report, a fault); the driver then names the file it was replaying and the exit
// status is not zero. A missing path or a folder without files fails too, so that a wrong path
// cannot pass.
#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <unistd.h>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
// Optional in a harness, as with libFuzzer.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);
// Defined by the sanitizers' runtimes (called before they exit on a report); null without one.
extern "C" __attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)(void));

namespace {

namespace fs = std::filesystem;

// The file being replayed, in a fixed buffer: the signal handler may not allocate.
char current[4096];

// write(2) only, so that it is safe in a signal handler.
void say(const char *text) {
    size_t left = std::strlen(text);
    while (left > 0) {
        const ssize_t n = ::write(STDERR_FILENO, text, left);
        if (n <= 0) {
            return;
        }
        text += n;
        left -= static_cast<size_t>(n);
    }
}

void say_current(const char *what) {
    say("\nreplay: ");
    say(current);
    say(": ");
    say(what);
    say("\n");
}

constexpr int caught[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
struct sigaction previous[std::size(caught)];

// Names the file, then gives the signal to whoever handled it before (a sanitizer, or the
// default action): a fault happens again when the handler returns, a sent signal is sent again.
void on_signal(int sig, siginfo_t *info, void *) {
    say_current(sig == SIGILL    ? "crashed (SIGILL: a trap, after a difference?)"
                : sig == SIGABRT ? "crashed (SIGABRT)"
                : sig == SIGFPE  ? "crashed (SIGFPE)"
                : sig == SIGBUS  ? "crashed (SIGBUS)"
                                 : "crashed (SIGSEGV)");
    for (size_t i = 0; i < std::size(caught); i++) {
        if (caught[i] == sig) {
            sigaction(sig, &previous[i], nullptr);
        }
    }
    if (info->si_code <= 0) {
        raise(sig);
    }
}

void on_sanitizer_death() {
    say_current("a sanitizer reported an error");
}

void install_handlers() {
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(caught); i++) {
        sigaction(caught[i], &sa, &previous[i]);
    }
    if (__sanitizer_set_death_callback != nullptr) {
        __sanitizer_set_death_callback(on_sanitizer_death);
    }
}

// The files a path stands for, or an error message.
std::string collect(const std::string &path, std::vector<std::string> &files) {
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) {
        files.push_back(path);
        return "";
    }
    if (!fs::is_directory(path, ec)) {
        return path + ": neither a file nor a folder";
    }
    std::vector<std::string> found;
    for (const fs::directory_entry &e : fs::directory_iterator(path, ec)) {
        if (e.is_regular_file(ec)) {
            found.push_back(e.path().string());
        }
    }
    if (ec) {
        return path + ": " + ec.message();
    }
    if (found.empty()) {
        return path + ": no files";
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
    return "";
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE_OR_FOLDER...\n", argv[0]);
        return 2;
    }
    std::vector<std::string> files;
    for (int i = 1; i < argc; i++) {
        if (std::string err = collect(argv[i], files); !err.empty()) {
            std::fprintf(stderr, "replay: %s\n", err.c_str());
            return 1;
        }
    }
    if (LLVMFuzzerInitialize != nullptr) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    install_handlers();
    for (const std::string &name : files) {
        std::ifstream f(name, std::ios::binary);
        if (!f) {
            std::fprintf(stderr, "replay: %s: cannot open\n", name.c_str());
            return 1;
        }
        std::vector<char> bytes((std::istreambuf_iterator<char>(f)),
                                std::istreambuf_iterator<char>());
        // An exactly sized copy, so that ASan sees a read past the end.
        const size_t size = bytes.size();
        std::unique_ptr<uint8_t[]> data(new uint8_t[size]);
        std::copy(bytes.begin(), bytes.end(), data.get());
        std::snprintf(current, sizeof current, "%s", name.c_str());
        // 0, or -1 for an input not worth keeping in a corpus; other values are reserved.
        if (const int rc = LLVMFuzzerTestOneInput(data.get(), size); rc != 0 && rc != -1) {
            std::fprintf(stderr, "replay: %s: the harness returned %d\n", name.c_str(), rc);
            return 1;
        }
    }
    std::printf("replay: %zu inputs, no difference and no crash\n", files.size());
    return 0;
}
