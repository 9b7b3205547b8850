// SPDX-License-Identifier: MIT
/// @file
/// The umbrella header of the bpftime C++ API.
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/conformance.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/helper_registry.hpp>
#include <bpftime/vm/isa.hpp>
#include <bpftime/vm/vm.hpp>
