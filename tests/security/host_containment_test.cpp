// SPDX-License-Identifier: MIT
// Containment in hosts: what a host cannot compile is refused at load, what still fails in a
// host gives the fail policy and shows in the listing, helpers per attach type, map handles
// reused without a stale handle reaching a new map, and link update.
#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/nginx.hpp>
#include <bpftime/helpers/helpers.hpp>
#include <bpftime/minimal_syscall_server.h>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/vm/assembler.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace bpftime {
namespace {

// An lddw whose src is 3 (pseudo_var_addr): validation accepts it; no host can resolve it.
std::vector<vm::ebpf_inst> lddw_src3() {
    return {{vm::op_lddw, 0, vm::pseudo_var_addr, 0, 1}, {}, {vm::op_exit, 0, 0, 0, 0}};
}

std::vector<vm::ebpf_inst> assemble(const std::string &text) {
    auto insns = vm::assemble(text);
    EXPECT_TRUE(insns) << insns.err().message;
    return insns ? *insns : std::vector<vm::ebpf_inst>{};
}

// Copies 64 bytes from the address in r1 (the context) with probe_read_user (112).
const char *read_user_text = "mov %r3, %r1\nmov %r1, %r10\nadd %r1, -64\nmov %r2, 64\n"
                             "call 112\nmov %r0, 0\nexit\n";

struct request {
    std::string path = "/x", method = "GET";
    bpftime_nginx_request r{};
    request() {
        r.path = r.uri = path.data();
        r.path_len = r.uri_len = static_cast<uint32_t>(path.size());
        r.method = method.data();
        r.method_len = static_cast<uint32_t>(method.size());
        r.host = r.client = "";
    }
};

struct ContainmentTest : test::provider_fixture {
    ContainmentTest() : provider_fixture("bpftime-containment-test") {}

    uint32_t program(const std::vector<vm::ebpf_inst> &insns, std::vector<uint32_t> maps = {}) {
        auto id = provider->create_program({"p", 0, "", insns, std::move(maps)});
        EXPECT_TRUE(id) << id.err().message;
        return id ? *id : 0;
    }
    uint32_t target(int32_t type, const std::string &args = "") {
        auto id = provider->create_attach_target(type, args);
        EXPECT_TRUE(id) << id.err().message;
        return id ? *id : 0;
    }
};

TEST_F(ContainmentTest, WhatHostsCannotCompileIsRefusedAtLoad) {
    vm::load_options any_lddw; // what validation alone accepts, as the store sees it
    any_lddw.resolver = [](uint8_t, int32_t, int32_t) -> result<vm::resolved_lddw> {
        return vm::resolved_lddw{};
    };
    ASSERT_TRUE(vm::validate(lddw_src3(), any_lddw).ok());
    auto id = provider->create_program({"var_addr", 0, "", lddw_src3(), {}});
    ASSERT_FALSE(id);
    EXPECT_NE(id.err().message.find("program var_addr"), std::string::npos) << id.err().message;
    EXPECT_NE(id.err().message.find("lddw kind 3"), std::string::npos) << id.err().message;
    // So is a replacement a host could not compile.
    uint32_t ok = program(assemble("mov %r0, 1\nexit\n"));
    auto r = provider->replace_program(ok, {"var_addr", 0, "", lddw_src3(), {}});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("lddw kind 3"), std::string::npos) << r.err().message;
}

// A program written by something that skipped the checks (an older controller, a hostile
// one): the nginx host fails every request with the fail policy, and the listing shows why.
TEST_F(ContainmentTest, ALinkAHostCannotRunFailsEveryRequestAndIsListed) {
    uint32_t good = program(assemble("mov %r0, 0\nexit\n"));
    uint32_t url = target(attach_type_nginx_url);
    ASSERT_TRUE(provider->attach_program(good, url));
    bpftime_server *server = nullptr;
    ASSERT_EQ(bpftime_server__create(name.c_str(), nullptr, nullptr, &server), 0);
    request req;
    EXPECT_EQ(bpftime_server__filter_request(server, &req.r), 0);

    auto bad = seg->create_program("var_addr", 0, "", lddw_src3(), {});
    ASSERT_TRUE(bad) << bad.err().message;
    auto link = seg->create_link("link", *bad, url, true);
    ASSERT_TRUE(link) << link.err().message;
    for (int i = 0; i < 3; i++) {
        int rc = bpftime_server__filter_request(server, &req.r);
        EXPECT_LT(rc, 0) << "request " << i << " decided " << rc;
    }
    EXPECT_NE(std::string(bpftime_server__last_error(server)).find("link " + std::to_string(*link)),
              std::string::npos)
        << bpftime_server__last_error(server);

    auto listed = provider->list();
    ASSERT_TRUE(listed) << listed.err().message;
    ASSERT_EQ(listed->link_hosts.count(*link), 1u);
    const auto &hosts = listed->link_hosts.at(*link);
    ASSERT_EQ(hosts.size(), 1u);
    EXPECT_EQ(hosts[0].pid, getpid());
    EXPECT_TRUE(hosts[0].failed);
    EXPECT_NE(hosts[0].why.find("lddw kind 3"), std::string::npos) << hosts[0].why;
    // The good link runs in this process.
    bool good_running = false;
    for (const auto &[id, hs] : listed->link_hosts) {
        for (const auto &h : hs) {
            good_running |= id != *link && !h.failed && h.pid == getpid();
        }
    }
    EXPECT_TRUE(good_running);

    // Once the link is gone, the programs decide again.
    ASSERT_TRUE(provider->destroy_object(*link));
    EXPECT_EQ(bpftime_server__filter_request(server, &req.r), 0);
    bpftime_server__destroy(server);
    // A host that leaves takes its records along.
    listed = provider->list();
    ASSERT_TRUE(listed);
    EXPECT_TRUE(listed->link_hosts.empty());
}

TEST_F(ContainmentTest, HostStateRecordsAreBoundedAndDropDeadProcesses) {
    uint32_t p = program(assemble("mov %r0, 0\nexit\n"));
    auto link = provider->attach_program(p, target(attach_type_test, "h"));
    ASSERT_TRUE(link);
    // A process that no longer exists: a child that exited.
    pid_t dead = fork();
    if (dead == 0) {
        _exit(0);
    }
    ASSERT_GT(dead, 0);
    waitpid(dead, nullptr, 0);
    ASSERT_TRUE(seg->set_link_host_state(*link, {dead, true, "gone"}));
    auto states = seg->link_host_states();
    ASSERT_TRUE(states);
    EXPECT_EQ(states->count(*link), 0u);
    // More hosts than a link keeps: the newest win (pid 1 exists; its record is rewritten).
    for (size_t i = 0; i < store::max_link_hosts + 3; i++) {
        ASSERT_TRUE(seg->set_link_host_state(*link, {1, false, ""}));
        ASSERT_TRUE(
            seg->set_link_host_state(*link, {getpid(), true, "attempt " + std::to_string(i)}));
    }
    states = seg->link_host_states();
    ASSERT_TRUE(states);
    ASSERT_EQ(states->at(*link).size(), 2u);
    EXPECT_EQ(states->at(*link)[1].why, "attempt " + std::to_string(store::max_link_hosts + 2));
    // Reporting does not make hosts resync.
    uint64_t gen = seg->generation();
    ASSERT_TRUE(seg->set_link_host_state(*link, {getpid(), false, ""}));
    EXPECT_EQ(seg->generation(), gen);
}

TEST_F(ContainmentTest, NginxProgramsMayNotReadTheHostsMemory) {
    uint32_t reader = program(assemble(read_user_text));
    uint32_t url = target(attach_type_nginx_url);
    auto link = provider->attach_program(reader, url);
    ASSERT_FALSE(link);
    EXPECT_EQ(link.err().code, EPERM);
    EXPECT_EQ(link.err().message,
              "program " + std::to_string(reader) +
                  " calls probe_read_user (112), which nginx-url programs may not use");
    // link update is refused the same way.
    uint32_t fine = program(assemble("mov %r0, 0\nexit\n"));
    auto l = provider->attach_program(fine, url);
    ASSERT_TRUE(l);
    auto u = provider->update_link(*l, reader);
    ASSERT_FALSE(u);
    EXPECT_EQ(u.err().code, EPERM);
    // And a replacement that would make a linked program call it.
    auto r = provider->replace_program(fine, {"p", 0, "", assemble(read_user_text), {}});
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("probe_read_user (112)"), std::string::npos);

    // Tracing programs keep it: the same program at a test hook (which keeps every helper).
    auto hooks = std::make_unique<callable_attach_impl>();
    callable_attach_impl &h = *hooks;
    ASSERT_TRUE(provider->manager().register_attach_impl(attach_type_test, std::move(hooks)));
    ASSERT_TRUE(provider->attach_program(reader, target(attach_type_test, "t")));
    auto uprobe = find_attach_type(attach_type_uprobe);
    ASSERT_TRUE(uprobe);
    EXPECT_TRUE(allows_helper(*uprobe, 112));
    EXPECT_TRUE(check_program_helpers(assemble(read_user_text), reader, attach_type_uprobe));
    ASSERT_TRUE(provider->instantiate());
    char secret[64] = "secret";
    auto runs = h.trigger("t", secret, sizeof secret);
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_TRUE(runs[0].ok()) << runs[0].err().message;
}

// In a host: a link written past the provider's checks is refused at instantiate, by name; a
// helper called through a register (callx) is not there either.
TEST_F(ContainmentTest, HostsRefuseHelpersOutsideTheAttachTypesSet) {
    auto insns = assemble(read_user_text);
    auto bad = seg->create_program("reader", 0, "", insns, {});
    ASSERT_TRUE(bad);
    uint32_t url = target(attach_type_nginx_url);
    auto link = seg->create_link("link", *bad, url, true);
    ASSERT_TRUE(link);
    attach_manager mgr(seg);
    auto impl = std::make_unique<nginx_module_attach_impl>();
    nginx_module_attach_impl &nginx = *impl;
    ASSERT_TRUE(mgr.register_attach_impl(attach_type_nginx_url, std::move(impl)));
    auto r = mgr.instantiate();
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("calls probe_read_user (112), which nginx-url programs may "
                                   "not use"),
              std::string::npos)
        << r.err().message;
    ASSERT_EQ(mgr.failures().size(), 1u);
    EXPECT_EQ(mgr.failures()[0].link_id, *link);
    EXPECT_EQ(nginx.attached(), 0u);

    ASSERT_TRUE(seg->destroy(*link));
    // probe_read_user through callx (the assembler has no mnemonic for it).
    auto callx = assemble("mov %r4, 112\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\n"
                          "mov %r3, %r10\nja +0\nmov %r0, 0\nexit\n");
    ASSERT_EQ(callx.size(), 8u);
    callx[5] = {vm::op_callx, 4, 0, 0, 0};
    auto sneaky = program(callx);
    ASSERT_TRUE(provider->attach_program(sneaky, url));
    ASSERT_TRUE(mgr.instantiate());
    ASSERT_EQ(nginx.attached(), 1u);
    request req;
    nginx_verdict verdict;
    nginx_failure failure;
    EXPECT_FALSE(nginx.filter(req.r, verdict, failure));
    EXPECT_EQ(failure.err.code, vm::fault_bad_helper) << failure.err.message;
}

// 100,000 maps created, used and destroyed in one host process: handle slots are reused.
TEST_F(ContainmentTest, MapHandlesAreReused) {
    manager_options opts;
    opts.engine = vm::engine_kind::interpreter; // the point is the handles, not the compiler
    attach_manager mgr(seg, opts);
    auto hooks = std::make_unique<callable_attach_impl>();
    callable_attach_impl &h = *hooks;
    ASSERT_TRUE(mgr.register_attach_impl(attach_type_test, std::move(hooks)));
    uint32_t t = target(attach_type_test, "h");
    size_t before = helpers::map_handles_in_use();
    constexpr int cycles = 100'000;
    for (int i = 0; i < cycles; i++) {
        auto m = seg->create_map("m", {maps::map_type::array, 4, 8, 1, 0});
        ASSERT_TRUE(m) << m.err().message;
        // map[0] = i, then return map[0].
        auto insns = assemble("stw [%r10-4], 0\nstdw [%r10-16], " + std::to_string(i) +
                              "\nlddw %r1, map_fd(" + std::to_string(*m) +
                              ")\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\n"
                              "mov %r4, 0\ncall 2\nlddw %r1, map_fd(" +
                              std::to_string(*m) +
                              ")\nmov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\n"
                              "ldxdw %r0, [%r0]\nout:\nexit\n");
        auto p = seg->create_program("p", 0, "", insns, {*m});
        ASSERT_TRUE(p) << p.err().message;
        auto l = seg->create_link("l", *p, t, true);
        ASSERT_TRUE(l) << l.err().message;
        ASSERT_TRUE(mgr.instantiate());
        auto runs = h.trigger("h", nullptr, 0);
        ASSERT_EQ(runs.size(), 1u);
        ASSERT_TRUE(runs[0].ok()) << "cycle " << i << ": " << runs[0].err().message;
        ASSERT_EQ(*runs[0], static_cast<uint64_t>(i));
        ASSERT_TRUE(seg->destroy(*l));
        ASSERT_TRUE(seg->destroy(*p));
        ASSERT_TRUE(seg->destroy(*m));
        ASSERT_TRUE(mgr.instantiate());
    }
    EXPECT_EQ(helpers::map_handles_in_use(), before);
}

// A handle value a program kept after its map went never reaches the map that reuses the slot.
TEST(MapHandles, AStaleHandleNeverReachesANewMap) {
    maps::map_spec spec{maps::map_type::array, 4, 8, 4, 0};
    auto size = maps::storage_size(spec, 1);
    ASSERT_TRUE(size);
    alignas(64) static uint8_t a[1 << 14], b[1 << 14];
    ASSERT_TRUE(maps::init_storage(a, *size, spec, 1));
    ASSERT_TRUE(maps::init_storage(b, *size, spec, 1));
    auto va = maps::map_view::open(a, *size, spec);
    auto vb = maps::map_view::open(b, *size, spec);
    ASSERT_TRUE(va && vb);
    helpers::register_all();
    uint64_t stale = 0;
    {
        auto ha = helpers::make_map_handle(*va);
        ASSERT_TRUE(ha);
        stale = (*ha)->value();
    }
    // Reused slots go oldest first; take handles until the stale one's slot comes round.
    std::vector<std::shared_ptr<const helpers::map_handle>> held;
    bool reused = false;
    for (int i = 0; i < 4096 && !reused; i++) {
        auto hb = helpers::make_map_handle(*vb);
        ASSERT_TRUE(hb);
        reused = ((*hb)->value() & 0xffff) == (stale & 0xffff);
        EXPECT_NE((*hb)->value(), stale);
        held.push_back(*hb);
    }
    ASSERT_TRUE(reused);
    EXPECT_FALSE(helpers::direct_lookup_of(stale));
    // A program given the stale value (as if it had kept it in a map) is stopped.
    std::vector<vm::ebpf_inst> insns = assemble("stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\n"
                                                "call 1\nexit\n");
    insns.insert(insns.begin(), {{vm::op_lddw, 1, 0, 0, static_cast<int32_t>(stale)},
                                 {0, 0, 0, 0, static_cast<int32_t>(stale >> 32)}});
    auto prog = vm::program::load(insns);
    ASSERT_TRUE(prog) << prog.err().message;
    auto eng = vm::make_engine(vm::engine_kind::interpreter, *prog);
    ASSERT_TRUE(eng);
    auto r = (*eng)->run(nullptr, 0);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("r1 is not a map"), std::string::npos) << r.err().message;
}

TEST_F(ContainmentTest, LinkUpdateSwitchesTheProgramKeepingTheLink) {
    auto hooks = std::make_unique<callable_attach_impl>();
    callable_attach_impl &h = *hooks;
    ASSERT_TRUE(provider->manager().register_attach_impl(attach_type_test, std::move(hooks)));
    uint32_t one = program(assemble("mov %r0, 1\nexit\n"));
    uint32_t two = program(assemble("mov %r0, 2\nexit\n"));
    auto link = provider->attach_program(one, target(attach_type_test, "h"), 77);
    ASSERT_TRUE(link);
    ASSERT_TRUE(provider->instantiate());
    ASSERT_EQ(*h.trigger("h", nullptr, 0).at(0), 1u);
    auto attach_id = provider->manager().attach_id_of(*link);

    ASSERT_TRUE(provider->update_link(*link, two));
    ASSERT_TRUE(provider->instantiate());
    auto runs = h.trigger("h", nullptr, 0);
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(*runs[0], 2u);
    EXPECT_EQ(provider->manager().attach_id_of(*link), attach_id); // swapped in place
    auto l = seg->link(*link);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->prog_id, two);
    EXPECT_EQ(l->cookie, 77u);
    EXPECT_EQ(l->runs, 2u);
    // The old program is free to go; the new one is in use.
    EXPECT_TRUE(provider->destroy_object(one));
    EXPECT_FALSE(provider->destroy_object(two));
    // Bad updates say why.
    EXPECT_EQ(provider->update_link(*link, 999).err().code, ENOENT);
    EXPECT_EQ(provider->update_link(two, two).err().code, EINVAL); // not a link
}

TEST_F(ContainmentTest, LinkUpdateTakesEffectInARunningFilter) {
    uint32_t url = target(attach_type_nginx_url);
    uint32_t accept = program(assemble("mov %r0, 0\nexit\n"));
    uint32_t refuse = program(assemble("mov %r0, 418\nexit\n"));
    auto link = provider->attach_program(accept, url);
    ASSERT_TRUE(link);
    bpftime_server *server = nullptr;
    ASSERT_EQ(bpftime_server__create(name.c_str(), nullptr, nullptr, &server), 0);
    request req;
    EXPECT_EQ(bpftime_server__filter_request(server, &req.r), 0);
    ASSERT_TRUE(provider->update_link(*link, refuse));
    EXPECT_EQ(bpftime_server__filter_request(server, &req.r), 418);
    EXPECT_EQ(bpftime_server__attached(server), 1);
    bpftime_server__destroy(server);
}

} // namespace
} // namespace bpftime
