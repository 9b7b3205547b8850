// SPDX-License-Identifier: MIT
/// @file
/// nginx_module_attach_impl: the nginx URL filter (attach type "nginx-url").
#pragma once

#include <bpftime/attach/attach.hpp>
#include <bpftime/nginx_filter.h>

#include <vector>

namespace bpftime {

/// What the filter decided about a request.
struct nginx_verdict {
    int status = 0;       ///< 0 accept, else the HTTP status to refuse with
    uint32_t link_id = 0; ///< the link whose program refused (0 when accepted)
};

/// Why the filter could not decide.
struct nginx_failure {
    uint32_t link_id = 0; ///< the link whose program failed
    error err;
};

/// Every link to an nginx URL target runs for each request, in link order; the first program
/// that refuses decides. A program returns 0 to accept, 400..599 to refuse with that status,
/// anything else to refuse with 403. Programs read the request (struct
/// bpftime_nginx_request) and its strings, all read-only. One thread at a time (an nginx
/// worker).
class nginx_module_attach_impl final : public base_attach_impl {
public:
    /// Instructions one program may run per request.
    static constexpr uint64_t instruction_budget = 1'000'000;

    result<int> create_attach(std::shared_ptr<const attached_program> prog,
                              const std::string &args) override;
    result<void> detach(int attach_id) override;
    /// Swaps the program in place (requests run on the thread that calls this).
    result<int> replace_attach(int attach_id, std::shared_ptr<const attached_program> prog,
                               const std::string &args) override;

    /// Runs the attached programs on a request. Each link counts what its program decided
    /// (store::link_counters::count_decision): allowed, or refused with the status.
    bool filter(const bpftime_nginx_request &req, nginx_verdict &verdict,
                nginx_failure &failure) const;
    /// Counts the host's fail policy applied to a request after link link_id failed (nothing
    /// when no attached link has that id).
    void count_fail_policy(uint32_t link_id, bool open) const;
    size_t attached() const { return entries_.size(); }

private:
    struct entry {
        int attach_id;
        std::shared_ptr<const attached_program> prog;
    };
    std::vector<entry> entries_; // in link order
};

} // namespace bpftime
