// SPDX-License-Identifier: MIT
// bpftime stats | metrics: what links ran, as rates on a terminal and as Prometheus metrics
// (an HTTP endpoint on loopback, or a file for node_exporter's textfile collector); and the
// counter columns `bpftime list` shows.
#include "cli.hpp"

#include <bpftime/attach/attach.hpp>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace bpftime::cli {

namespace {

using json = nlohmann::ordered_json;

constexpr const char *kernel_stats_off =
    "off: kernel.bpf_stats_enabled is 0 (bpftime --provider kernel stats --enable-timing)";

std::atomic<bool> stop_requested{false};

void on_stop_signal(int) {
    stop_requested = true;
}

// SIGINT and SIGTERM end a loop at its next check instead of killing the process mid-write.
void catch_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// Sleeps up to seconds, returning early when a stop was asked.
void pause_for(double seconds) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!stop_requested && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

const store::target_info *target_of(const store::snapshot &s, uint32_t id) {
    for (const auto &t : s.targets) {
        if (t.id == id) {
            return &t;
        }
    }
    return nullptr;
}

const store::program_info *program_of(const store::snapshot &s, uint32_t id) {
    for (const auto &p : s.programs) {
        if (p.id == id) {
            return &p;
        }
    }
    return nullptr;
}

// --- stats ---

struct stats_args {
    bool enable_timing = false, disable_timing = false;
    std::optional<double> watch;
    uint64_t count = 0;
    double interval = 1;
};

struct sample {
    std::chrono::steady_clock::time_point at;
    listing listed;
};

result<sample> take_sample(base_event_provider &p) {
    auto l = p.list();
    if (!l) {
        return l.err();
    }
    return sample{std::chrono::steady_clock::now(), std::move(*l)};
}

std::string rate_text(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, v >= 100 || v == 0 ? "%.0f" : "%.1f", v);
    return buf;
}

void print_rates(const global_options &g, const sample &before, const sample &after) {
    double secs = std::chrono::duration<double>(after.at - before.at).count();
    const store::snapshot &snap = after.listed.objects;
    json links = json::array();
    if (!g.json) {
        std::printf("%-4s %-16s %-16s %12s %10s %10s %10s %10s %8s\n", "ID", "PROGRAM", "TYPE",
                    "RUNS", "RUNS/S", "NS/RUN", "FAULTS", "FAULTS/S", "BUDGET");
    }
    for (const store::link_info &l : snap.links) {
        const store::link_info *old = nullptr;
        for (const auto &o : before.listed.objects.links) {
            if (o.id == l.id) {
                old = &o;
            }
        }
        // A link new since the first sample counts from zero.
        uint64_t d_runs = l.runs - (old ? std::min(old->runs, l.runs) : 0);
        uint64_t d_faults = l.faults - (old ? std::min(old->faults, l.faults) : 0);
        uint64_t d_ns = l.run_time_ns - (old ? std::min(old->run_time_ns, l.run_time_ns) : 0);
        double runs_s = secs > 0 ? static_cast<double>(d_runs) / secs : 0;
        double faults_s = secs > 0 ? static_cast<double>(d_faults) / secs : 0;
        // Time per run only means something over runs that were timed.
        std::optional<double> ns_run;
        if (after.listed.run_timing && d_runs > 0 && d_ns > 0) {
            ns_run = static_cast<double>(d_ns) / static_cast<double>(d_runs);
        }
        const store::program_info *p = program_of(snap, l.prog_id);
        const store::target_info *t = target_of(snap, l.target_id);
        std::string type = t ? attach_type_name(t->attach_type) : "?";
        std::string prog = p ? p->name : std::to_string(l.prog_id);
        if (g.json) {
            links.push_back({{"id", l.id},
                             {"name", l.name},
                             {"prog", prog},
                             {"type", type},
                             {"run_cnt", l.runs},
                             {"run_time_ns", l.run_time_ns},
                             {"faults", l.faults},
                             {"budget_stops", l.budget_stops},
                             {"runs_per_s", runs_s},
                             {"ns_per_run", ns_run ? json(*ns_run) : json(nullptr)},
                             {"faults_per_s", faults_s}});
            continue;
        }
        std::printf("%-4u %-16s %-16s %12" PRIu64 " %10s %10s %10" PRIu64 " %10s %8" PRIu64 "\n",
                    l.id, prog.c_str(), type.c_str(), l.runs, rate_text(runs_s).c_str(),
                    ns_run ? rate_text(*ns_run).c_str() : "-", l.faults,
                    rate_text(faults_s).c_str(), l.budget_stops);
    }
    if (g.json) {
        std::puts(json{{"interval_s", secs},
                       {"run_timing", after.listed.run_timing},
                       {"generation", snap.generation},
                       {"links", links}}
                      .dump()
                      .c_str());
    } else if (!after.listed.counted) {
        std::printf("(%s)\n", kernel_stats_off);
    } else if (!after.listed.run_timing) {
        std::printf("(run timing is off: bpftime stats --enable-timing)\n");
    }
    std::fflush(stdout);
}

result<void> set_kernel_stats(bool on) {
    std::FILE *f = std::fopen("/proc/sys/kernel/bpf_stats_enabled", "w");
    if (f == nullptr || std::fputs(on ? "1\n" : "0\n", f) < 0 || std::fclose(f) != 0) {
        int e = errno;
        return make_error(e, std::string("cannot write kernel.bpf_stats_enabled: ") +
                                 std::strerror(e) + " (it needs root)");
    }
    return {};
}

int cmd_stats(const global_options &g, const stats_args &a) {
    if (a.enable_timing || a.disable_timing) {
        bool on = a.enable_timing;
        if (g.kernel()) {
            if (auto r = set_kernel_stats(on); !r) {
                return report(r.err());
            }
        } else {
            auto seg = open_store(g, false);
            if (!seg) {
                return report(seg.err());
            }
            if (auto r = (*seg)->set_run_timing(on); !r) {
                return report(r.err());
            }
        }
        if (g.json) {
            std::puts(json{{"run_timing", on}}.dump().c_str());
        } else {
            std::printf("run timing %s\n", on ? "on" : "off");
        }
        return 0;
    }
    auto provider = open_provider(g, false);
    if (!provider) {
        return report(provider.err());
    }
    double every = a.watch ? *a.watch : a.interval;
    if (!(every > 0)) {
        return report(make_error(EINVAL, "the interval must be more than 0 seconds"));
    }
    catch_stop_signals();
    auto before = take_sample(**provider);
    if (!before) {
        return report(before.err());
    }
    // Without --watch: one round; with it, rounds until SIGINT/SIGTERM or --count of them.
    uint64_t rounds = a.watch ? a.count : 1;
    for (uint64_t done = 0; !stop_requested && (rounds == 0 || done < rounds); done++) {
        pause_for(every);
        auto after = take_sample(**provider);
        if (!after) {
            return report(after.err());
        }
        if (a.watch && !g.json && isatty(STDOUT_FILENO)) {
            std::printf("\033[H\033[2J");
        }
        print_rates(g, *before, *after);
        before = std::move(after);
    }
    return 0;
}

// --- metrics ---

std::string label_value(const std::string &v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

struct family {
    const char *name, *type, *help;
    std::vector<std::string> samples;
};

void sample_line(family &f, const std::vector<std::pair<const char *, std::string>> &labels,
                 uint64_t value) {
    std::string line = f.name;
    if (!labels.empty()) {
        line += '{';
        for (size_t i = 0; i < labels.size(); i++) {
            line += std::string(i ? "," : "") + labels[i].first + "=\"" +
                    label_value(labels[i].second) + '"';
        }
        line += '}';
    }
    f.samples.push_back(line + ' ' + std::to_string(value) + '\n');
}

} // namespace

namespace {

// The Prometheus text exposition (version 0.0.4) of everything the provider lists.
result<std::string> metrics_text(base_event_provider &provider) {
    auto listed = provider.list();
    if (!listed) {
        return listed.err();
    }
    const store::snapshot &snap = listed->objects;
    family runs{"bpftime_link_runs_total", "counter",
                "Program runs through the link, over all host processes."};
    family time_ns{"bpftime_link_run_time_ns_total", "counter",
                   "Nanoseconds spent in the link's runs while run timing was on."};
    family faults{"bpftime_link_faults_total", "counter",
                  "Runs of the link that stopped with an error (budget stops included)."};
    family budget{"bpftime_link_budget_stops_total", "counter",
                  "Runs of the link stopped by the instruction budget."};
    family enabled{"bpftime_link_enabled", "gauge", "1 when the link is enabled."};
    family host_runs{"bpftime_link_host_runs_total", "counter",
                     "Runs of the link counted by one host process."};
    family decisions{"bpftime_nginx_decisions_total", "counter",
                     "nginx URL filter decisions through the link: allowed, refused (with the "
                     "status), fail_open and fail_closed (the fail policy after the link "
                     "failed)."};
    family prog_insns{"bpftime_program_insns", "gauge", "Instructions of the program."};
    family prog_links{"bpftime_program_links", "gauge", "Links that run the program."};
    family map_entries{"bpftime_map_entries", "gauge", "Entries in the map."};
    family map_max{"bpftime_map_max_entries", "gauge",
                   "The map's max_entries (bytes for a ring buffer)."};
    family generation{"bpftime_segment_generation", "gauge",
                      "The store's generation: bumped by every change of its objects."};
    family timing{"bpftime_run_timing_enabled", "gauge", "1 while hosts time every run."};
    family counted{"bpftime_runs_counted", "gauge",
                   "1 when runs are counted (0: kernel provider with kernel.bpf_stats_enabled "
                   "0, so run counts read 0)."};
    family damaged{"bpftime_damaged_objects", "gauge", "Records of the store refused as damaged."};

    for (const store::link_info &l : snap.links) {
        const store::program_info *p = program_of(snap, l.prog_id);
        const store::target_info *t = target_of(snap, l.target_id);
        std::vector<std::pair<const char *, std::string>> labels{
            {"link", std::to_string(l.id)},
            {"prog", p ? p->name : std::to_string(l.prog_id)},
            {"target", t ? t->args : std::to_string(l.target_id)},
            {"type", t ? attach_type_name(t->attach_type) : "unknown"}};
        sample_line(runs, labels, l.runs);
        sample_line(time_ns, labels, l.run_time_ns);
        sample_line(faults, labels, l.faults);
        sample_line(budget, labels, l.budget_stops);
        sample_line(enabled, labels, l.enabled ? 1 : 0);
        if (!l.decisions.empty()) {
            auto with = [&](const char *d, const std::string &status, uint64_t n) {
                auto dl = labels;
                dl.emplace_back("decision", d);
                dl.emplace_back("status", status);
                sample_line(decisions, dl, n);
            };
            with("allowed", "", l.decisions.allowed);
            for (const auto &[status, n] : l.decisions.refused) {
                with("refused", status == 0 ? "other" : std::to_string(status), n);
            }
            with("fail_open", "", l.decisions.fail_open);
            with("fail_closed", "503", l.decisions.fail_closed);
        }
        if (auto hosts = listed->link_hosts.find(l.id); hosts != listed->link_hosts.end()) {
            for (const store::link_host_state &h : hosts->second) {
                sample_line(host_runs,
                            {{"link", std::to_string(l.id)}, {"pid", std::to_string(h.pid)}},
                            h.runs);
            }
        }
    }
    for (const store::program_info &p : snap.programs) {
        uint64_t n = 0;
        for (const auto &l : snap.links) {
            n += l.prog_id == p.id ? 1 : 0;
        }
        std::vector<std::pair<const char *, std::string>> labels{{"prog", p.name},
                                                                 {"id", std::to_string(p.id)}};
        sample_line(prog_insns, labels, p.insns.size());
        sample_line(prog_links, labels, n);
    }
    for (const store::map_info &m : snap.maps) {
        auto access = provider.open_map(m.id);
        std::vector<std::pair<const char *, std::string>> labels{
            {"map", m.name},
            {"id", std::to_string(m.id)},
            {"type", maps::map_type_name(m.spec.type)}};
        if (access) {
            sample_line(map_entries, labels, (*access)->count());
        }
        sample_line(map_max, labels, m.spec.max_entries);
    }
    sample_line(generation, {}, snap.generation);
    sample_line(timing, {}, listed->run_timing ? 1 : 0);
    sample_line(counted, {}, listed->counted ? 1 : 0);
    sample_line(damaged, {}, snap.damaged.size());

    std::string out;
    for (const family *f :
         {&runs, &time_ns, &faults, &budget, &enabled, &host_runs, &decisions, &prog_insns,
          &prog_links, &map_entries, &map_max, &generation, &timing, &counted, &damaged}) {
        if (f->samples.empty()) {
            continue;
        }
        out += std::string("# HELP ") + f->name + ' ' + f->help + '\n';
        out += std::string("# TYPE ") + f->name + ' ' + f->type + '\n';
        for (const std::string &s : f->samples) {
            out += s;
        }
    }
    return out;
}

struct metrics_args {
    std::string listen, textfile;
    double interval = 0;
};

// "127.0.0.1:9435" (any 127.x address; port 0 picks a free one).
result<sockaddr_in> parse_listen(const std::string &text) {
    auto colon = text.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    std::string host = colon == std::string::npos ? "" : text.substr(0, colon);
    if (host == "localhost") {
        host = "127.0.0.1";
    }
    char *end = nullptr;
    std::string port = colon == std::string::npos ? "" : text.substr(colon + 1);
    unsigned long p = port.empty() ? 70000 : std::strtoul(port.c_str(), &end, 10);
    if (colon == std::string::npos || inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 ||
        p > 65535 || (end != nullptr && *end != '\0')) {
        return make_error(EINVAL,
                          "--listen " + text + ": expected ADDRESS:PORT, e.g. 127.0.0.1:9435");
    }
    if ((ntohl(a.sin_addr.s_addr) >> 24) != 127) {
        return make_error(EINVAL, "--listen " + text +
                                      ": only loopback addresses (127.0.0.0/8) are served, the "
                                      "metrics have no authentication; put a proxy in front or "
                                      "use --textfile with node_exporter");
    }
    a.sin_port = htons(static_cast<uint16_t>(p));
    return a;
}

// Reads a request's head (up to the blank line) within 2 seconds and 8 KiB.
std::string read_request(int fd) {
    std::string req;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        pollfd p{fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) {
            break;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            break;
        }
        req.append(buf, static_cast<size_t>(n));
    }
    return req;
}

void send_all(int fd, const std::string &data) {
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        off += static_cast<size_t>(n);
    }
}

void respond(int fd, const char *status, const char *type, const std::string &body) {
    send_all(fd, std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
                     "\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n" + body);
}

int serve(base_event_provider &provider, const std::string &where) {
    auto addr = parse_listen(where);
    if (!addr) {
        return report(addr.err());
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, reinterpret_cast<sockaddr *>(&*addr), sizeof *addr) != 0 ||
        listen(s, 16) != 0) {
        int e = errno;
        if (s >= 0) {
            close(s);
        }
        return report(make_error(e, "cannot listen on " + where + ": " + std::strerror(e)));
    }
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    getsockname(s, reinterpret_cast<sockaddr *>(&bound), &len);
    char host[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &bound.sin_addr, host, sizeof host);
    // The port, for scripts that asked for port 0.
    std::fprintf(stderr, "bpftime: serving metrics on http://%s:%u/metrics\n", host,
                 ntohs(bound.sin_port));
    while (!stop_requested) {
        pollfd p{s, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        int c = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            continue;
        }
        std::string req = read_request(c);
        auto line_end = req.find("\r\n");
        std::string line = req.substr(0, line_end == std::string::npos ? 0 : line_end);
        auto sp1 = line.find(' ');
        auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
        std::string method = line.substr(0, sp1);
        std::string path = sp2 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
        if (auto q = path.find('?'); q != std::string::npos) {
            path.resize(q);
        }
        if (sp2 == std::string::npos) {
            respond(c, "400 Bad Request", "text/plain", "bad request\n");
        } else if (method != "GET" && method != "HEAD") {
            respond(c, "405 Method Not Allowed", "text/plain", "only GET\n");
        } else if (path == "/metrics") {
            auto text = metrics_text(provider);
            if (text) {
                respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
                        method == "HEAD" ? "" : *text);
            } else {
                respond(c, "503 Service Unavailable", "text/plain", text.err().message + "\n");
            }
        } else if (path == "/") {
            respond(c, "200 OK", "text/html",
                    "<html><body><a href=\"/metrics\">bpftime metrics</a></body></html>\n");
        } else {
            respond(c, "404 Not Found", "text/plain", "only /metrics is served\n");
        }
        close(c);
    }
    close(s);
    return 0;
}

// Writes the metrics beside path and renames them over it, so a collector never reads half.
result<void> write_textfile(base_event_provider &provider, const std::string &path) {
    auto text = metrics_text(provider);
    if (!text) {
        return text.err();
    }
    std::string tmp = path + ".tmp." + std::to_string(getpid());
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        return make_error(e, "cannot write " + tmp + ": " + std::strerror(e));
    }
    size_t off = 0;
    while (off < text->size()) {
        ssize_t n = write(fd, text->data() + off, text->size() - off);
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp.c_str());
            return make_error(e, "cannot write " + tmp + ": " + std::strerror(e));
        }
        off += static_cast<size_t>(n);
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        unlink(tmp.c_str());
        return make_error(e, "cannot replace " + path + ": " + std::strerror(e));
    }
    return {};
}

int cmd_metrics(const global_options &g, const metrics_args &a) {
    if (a.listen.empty() == a.textfile.empty()) {
        return report(make_error(EINVAL, "metrics needs one of --listen ADDRESS:PORT or "
                                         "--textfile PATH"));
    }
    if (a.interval < 0 || (a.interval > 0 && a.textfile.empty())) {
        return report(make_error(EINVAL, "--interval SECONDS (more than 0) goes with --textfile"));
    }
    auto provider = open_provider(g, false);
    if (!provider) {
        return report(provider.err());
    }
    catch_stop_signals();
    if (!a.listen.empty()) {
        return serve(**provider, a.listen);
    }
    do {
        if (auto r = write_textfile(**provider, a.textfile); !r) {
            return report(r.err());
        }
        if (a.interval > 0) {
            pause_for(a.interval);
        }
    } while (a.interval > 0 && !stop_requested);
    return 0;
}

} // namespace

namespace {

json decisions_json(const store::filter_decisions &d) {
    json refused = json::object();
    for (const auto &[status, n] : d.refused) {
        refused[status == 0 ? "other" : std::to_string(status)] = n;
    }
    return {{"allowed", d.allowed},
            {"refused", refused},
            {"fail_open", d.fail_open},
            {"fail_closed", d.fail_closed}};
}

std::string decisions_text(const store::filter_decisions &d) {
    std::string s = "allowed " + std::to_string(d.allowed);
    for (const auto &[status, n] : d.refused) {
        s += ", refused " + (status == 0 ? std::string("other") : std::to_string(status)) + " " +
             std::to_string(n);
    }
    if (d.fail_open != 0) {
        s += ", fail open " + std::to_string(d.fail_open);
    }
    if (d.fail_closed != 0) {
        s += ", fail closed " + std::to_string(d.fail_closed);
    }
    return s;
}

} // namespace

progress::progress(std::string what, uint64_t total, uint64_t every)
    : what_(std::move(what)), total_(total), every_(every == 0 ? 1 : every),
      // Not when stdout is the same terminal: the entries would run through the line.
      tty_(isatty(STDERR_FILENO) == 1 && isatty(STDOUT_FILENO) == 0) {}

progress::~progress() {
    if (shown_) {
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
    }
}

void progress::step(uint64_t done) {
    // Checking the clock every item would cost more than a small item (a map entry); every
    // 1024 of those is enough.
    if (!tty_ || done % every_ != 0) {
        return;
    }
    auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                         .count());
    if (now < next_ms_) {
        return;
    }
    next_ms_ = now + 100;
    shown_ = true;
    std::fflush(stdout);
    if (total_ != 0) {
        std::fprintf(stderr, "\r%s: %" PRIu64 "/%" PRIu64 " (%" PRIu64 "%%)\033[K", what_.c_str(),
                     done, total_, std::min<uint64_t>(100, done * 100 / total_));
    } else {
        std::fprintf(stderr, "\r%s: %" PRIu64 "\033[K", what_.c_str(), done);
    }
    std::fflush(stderr);
}

void print_list_footer(const listing &listed) {
    if (!listed.counted && !listed.objects.links.empty()) {
        std::printf("(runs are not counted: %s)\n", kernel_stats_off);
    }
}

void add_link_counts(std::string &details, json &j, const listing &listed,
                     const store::link_info &l) {
    j["run_cnt"] = l.runs;
    j["run_time_ns"] = l.run_time_ns;
    j["faults"] = l.faults;
    j["budget_stops"] = l.budget_stops;
    // Kept for readers of earlier output.
    j["runs"] = l.runs;
    if (!listed.counted) {
        // Zeros because nothing counts, not because nothing ran.
        j["stats"] = kernel_stats_off;
        return;
    }
    details += ", runs " + std::to_string(l.runs);
    if (listed.kernel_stats) {
        // The kernel counts per program: over every link of the program.
        j["stats"] = "kernel: the program's run_cnt over all its links";
        details += " (program's), run time " + std::to_string(l.run_time_ns) + " ns";
        return;
    }
    details += ", faults " + std::to_string(l.faults);
    if (l.budget_stops != 0) {
        details += ", budget stops " + std::to_string(l.budget_stops);
    }
    if (l.run_time_ns != 0 || listed.run_timing) {
        details += ", run time " + std::to_string(l.run_time_ns) + " ns";
    }
    if (!l.decisions.empty()) {
        details += ", " + decisions_text(l.decisions);
        j["decisions"] = decisions_json(l.decisions);
    }
}

json host_decisions_json(const store::link_host_state &h) {
    return h.decisions.empty() ? json(nullptr) : decisions_json(h.decisions);
}

std::string host_counts_text(const store::link_host_state &h) {
    std::string s = "runs " + std::to_string(h.runs) + ", faults " + std::to_string(h.faults);
    if (h.budget_stops != 0) {
        s += ", budget stops " + std::to_string(h.budget_stops);
    }
    if (h.run_time_ns != 0) {
        s += ", run time " + std::to_string(h.run_time_ns) + " ns";
    }
    if (!h.decisions.empty()) {
        s += ", " + decisions_text(h.decisions);
    }
    return s;
}

void add_stats_commands(CLI::App &app, const global_options &g, int &status) {
    static stats_args sa;
    auto *stats = app.add_subcommand(
        "stats", "run rates per link (runs/s, ns/run, faults/s), and run timing on or off");
    auto *en = stats->add_flag("--enable-timing", sa.enable_timing,
                               "time every run from now on, in every host (kernel provider: "
                               "kernel.bpf_stats_enabled=1)");
    auto *dis = stats->add_flag("--disable-timing", sa.disable_timing, "stop timing runs");
    en->excludes(dis);
    stats
        ->add_option("--watch", sa.watch,
                     "refresh every SECONDS (default 1) until interrupted or --count rounds")
        ->expected(0, 1)
        ->default_str("1")
        ->check(CLI::Range(0.01, 86400.0));
    stats->add_option("--count", sa.count, "with --watch: stop after N rounds");
    stats
        ->add_option("--interval", sa.interval,
                     "without --watch: seconds between the two samples (default 1)")
        ->check(CLI::Range(0.01, 86400.0));
    stats->callback([&] {
        if (sa.count != 0 && !sa.watch) {
            status = report(make_error(EINVAL, "--count goes with --watch"));
            return;
        }
        if (sa.watch && *sa.watch == 0) {
            sa.watch = 1;
        }
        status = cmd_stats(g, sa);
    });

    static metrics_args ma;
    auto *metrics = app.add_subcommand(
        "metrics", "Prometheus metrics: served over HTTP on loopback, or written to a file for "
                   "node_exporter's textfile collector");
    metrics->add_option("--listen", ma.listen,
                        "serve GET /metrics on ADDRESS:PORT (loopback only) until SIGINT/SIGTERM");
    metrics->add_option("--textfile", ma.textfile,
                        "write the metrics to PATH (through a temporary file and a rename)");
    metrics->add_option("--interval", ma.interval,
                        "with --textfile: rewrite it every SECONDS until SIGINT/SIGTERM");
    metrics->callback([&] { status = cmd_metrics(g, ma); });
}

} // namespace bpftime::cli
