// SPDX-License-Identifier: MIT
/// @file
/// The umbrella header of the bpftime C++ API: every public C++ header, bottom to top.
/// The C API of the server library is <bpftime/minimal_syscall_server.h>; the context of nginx
/// URL-filter programs is <bpftime/nginx_filter.h> (included here through attach/nginx.hpp).
/// <bpftime/loader/elf_util.hpp> is left out: it is for ELF readers and needs libelf's header.
#pragma once

#include <bpftime/result.hpp>

#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/conformance.hpp>
#include <bpftime/vm/control_flow.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/helper_registry.hpp>
#include <bpftime/vm/isa.hpp>
#include <bpftime/vm/map_lookup_plan.hpp>
#include <bpftime/vm/vm.hpp>

#include <bpftime/helpers/helpers.hpp>
#include <bpftime/loader/elf.hpp>
#include <bpftime/maps/maps.hpp>
#include <bpftime/store/store.hpp>

#include <bpftime/attach/attach.hpp>
#include <bpftime/attach/nginx.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/usdt.hpp>
#include <bpftime/hook/inline_hook.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/provider/kernel_provider.hpp>
#include <bpftime/provider/usdt_attach.hpp>
