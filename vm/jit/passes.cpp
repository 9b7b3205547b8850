// SPDX-License-Identifier: MIT
// The JIT's pass pipelines and its own passes: loop versioning of the checks (hoist_checks) and
// accesses rebased onto loop-invariant pointers for the vectorizer (rebase_accesses).
#include "passes.hpp"

#include <llvm/Analysis/LoopInfo.h>
#include <llvm/Analysis/ScalarEvolution.h>
#include <llvm/Analysis/ScalarEvolutionExpressions.h>
#include <llvm/IR/ConstantRange.h>
#include <llvm/IR/Dominators.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/InlineAsm.h>
#include <llvm/IR/IntrinsicInst.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/PatternMatch.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Transforms/IPO/AlwaysInliner.h>
#include <llvm/Transforms/InstCombine/InstCombine.h>
#include <llvm/Transforms/Scalar/EarlyCSE.h>
#include <llvm/Transforms/Scalar/GVN.h>
#include <llvm/Transforms/Scalar/IndVarSimplify.h>
#include <llvm/Transforms/Scalar/JumpThreading.h>
#include <llvm/Transforms/Scalar/LICM.h>
#include <llvm/Transforms/Scalar/LoopPassManager.h>
#include <llvm/Transforms/Scalar/LoopRotation.h>
#include <llvm/Transforms/Scalar/LoopUnrollPass.h>
#include <llvm/Transforms/Scalar/SROA.h>
#include <llvm/Transforms/Scalar/SimpleLoopUnswitch.h>
#include <llvm/Transforms/Scalar/SimplifyCFG.h>
#include <llvm/Transforms/Utils/Local.h>
#include <llvm/Transforms/Utils/LoopSimplify.h>
#include <llvm/Transforms/Utils/LoopUtils.h>
#include <llvm/Transforms/Utils/ScalarEvolutionExpander.h>
#include <llvm/Transforms/Vectorize/LoopVectorize.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <vector>

namespace bpftime::vm::jit {
namespace {

// Loop versioning of the checks in innermost loops whose trip count SCEV can bound (its
// maximum backedge count). A condition computed once in the loop's preheader, `all_hold`,
// implies that every check of the loop passes on every iteration the loop can make:
// - an access check `x <u bound` (or `<=u`) whose x moves by a constant step per iteration and
//   whose bound does not change in the loop holds throughout when it holds at the first and at
//   the last iteration and x does not wrap in between;
// - a budget check `budget <s 0` cannot fire when the budget at the loop's entry covers
//   (iterations + 1) times the sum of every decrement on the loop's cycle (each block of an
//   innermost loop runs at most once per iteration; a decrement by a select of two constants
//   counts the larger).
// Each access check becomes `all_hold | check` and each budget check `!all_hold & check`, which
// changes nothing; non-trivial loop unswitching then splits the loop on all_hold: one copy
// without the checks, the original for when one may fail. The budget is still counted exactly.
struct hoist_checks : llvm::PassInfoMixin<hoist_checks> {
    // Loops that can run at most this many backedges are versioned on that largest count.
    static constexpr uint64_t max_constant_bound = 64;

    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        if (f.hasOptSize()) {
            return llvm::PreservedAnalyses::all(); // a run entry bound_budget made the rare way
        }
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        auto &dt = fam.getResult<llvm::DominatorTreeAnalysis>(f);
        const unsigned check = f.getContext().getMDKindID(check_kind);
        const unsigned budget = f.getContext().getMDKindID(budget_kind);
        bool changed = false;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                changed |= version(*loop, se, dt, check, budget);
            }
        }
        return changed ? llvm::PreservedAnalyses::none() : llvm::PreservedAnalyses::all();
    }

    // What an add of the budget takes from it at most: its constant, negative, or a select of
    // two such (InstCombine makes one of two ways that count differently and then join); 0
    // for anything else.
    static uint64_t decrement(const llvm::BinaryOperator &add) {
        auto magnitude = [](const llvm::Value *v) -> uint64_t {
            const auto *c = llvm::dyn_cast<llvm::ConstantInt>(v);
            if (c == nullptr || !c->isNegative() || c->isMinValue(true) ||
                c->getValue().getActiveBits() > 64) {
                return 0;
            }
            return c->getValue().abs().getZExtValue();
        };
        const llvm::Value *by = add.getOperand(1);
        if (const auto *sel = llvm::dyn_cast<llvm::SelectInst>(by)) {
            const uint64_t a = magnitude(sel->getTrueValue());
            const uint64_t b = magnitude(sel->getFalseValue());
            return a == 0 || b == 0 ? 0 : std::max(a, b);
        }
        return magnitude(by);
    }

    // The loop header's phi that v derives from through phis of the loop and adds of negative
    // constants (the budget's decrements, decrement()), collecting those adds; null for
    // anything else.
    static llvm::PHINode *budget_origin(llvm::Value *v, llvm::Loop &loop,
                                        std::set<llvm::Instruction *> &decrements,
                                        std::set<llvm::Value *> &seen) {
        llvm::PHINode *origin = nullptr;
        bool ok = true;
        std::vector<llvm::Value *> work{v};
        while (ok && !work.empty()) {
            llvm::Value *x = work.back();
            work.pop_back();
            if (!seen.insert(x).second) {
                continue;
            }
            auto *i = llvm::dyn_cast<llvm::Instruction>(x);
            if (i == nullptr || !loop.contains(i)) {
                ok = false;
            } else if (auto *phi = llvm::dyn_cast<llvm::PHINode>(i)) {
                if (phi->getParent() == loop.getHeader()) {
                    ok = origin == nullptr || origin == phi;
                    origin = phi;
                } else {
                    for (llvm::Value *in : phi->incoming_values()) {
                        work.push_back(in);
                    }
                }
            } else if (auto *add = llvm::dyn_cast<llvm::BinaryOperator>(i);
                       add != nullptr && add->getOpcode() == llvm::Instruction::Add) {
                ok = decrement(*add) != 0;
                decrements.insert(add);
                work.push_back(add->getOperand(0));
            } else {
                ok = false;
            }
        }
        return ok ? origin : nullptr;
    }

    // An upper bound of the backedges the loop takes that is cheap to compute before it: the
    // smallest exit count (SCEV's symbolic maximum) among exits that run on every iteration
    // (their block dominates the latch), leaving out counts with a division (the budget's own
    // exit, which IndVars makes a division of the budget, costs more to compute than it saves).
    static const llvm::SCEV *loop_bound(llvm::Loop &loop, llvm::ScalarEvolution &se,
                                        llvm::DominatorTree &dt, llvm::Type *i64) {
        // A short loop whose trip count the data gives (a record's length) but whose largest
        // count is a small constant is versioned on that constant: a test of the largest
        // reach, against constants, before each entry costs less than computing the count,
        // and a loop of a few iterations re-entered for every record pays it each time.
        const llvm::SCEV *constant = se.getConstantMaxBackedgeTakenCount(&loop);
        if (const auto *c = llvm::dyn_cast<llvm::SCEVConstant>(constant);
            c != nullptr && c->getAPInt().getActiveBits() <= 64 &&
            c->getAPInt().getZExtValue() < max_constant_bound) {
            return se.getConstant(i64, c->getAPInt().getZExtValue());
        }
        llvm::SmallVector<llvm::BasicBlock *, 4> exiting;
        loop.getExitingBlocks(exiting);
        const llvm::SCEV *best = nullptr;
        for (llvm::BasicBlock *bb : exiting) {
            if (!dt.dominates(bb, loop.getLoopLatch())) {
                continue;
            }
            const llvm::SCEV *c =
                se.getExitCount(&loop, bb, llvm::ScalarEvolution::SymbolicMaximum);
            if (llvm::isa<llvm::SCEVCouldNotCompute>(c) || !se.isLoopInvariant(c, &loop) ||
                c->getType()->getIntegerBitWidth() > 64 ||
                llvm::SCEVExprContains(
                    c, [](const llvm::SCEV *e) { return llvm::isa<llvm::SCEVUDivExpr>(e); })) {
                continue;
            }
            c = se.getNoopOrZeroExtend(c, i64);
            best = best == nullptr ? c : se.getUMinExpr(best, c);
        }
        return best;
    }

    static bool version(llvm::Loop &loop, llvm::ScalarEvolution &se, llvm::DominatorTree &dt,
                        unsigned check_md, unsigned budget_md) {
        llvm::BasicBlock *pre = loop.getLoopPreheader();
        llvm::BasicBlock *latch = loop.getLoopLatch();
        if (pre == nullptr || latch == nullptr) {
            return false;
        }
        llvm::Type *i64 = llvm::Type::getInt64Ty(pre->getContext());
        const llvm::SCEV *max = loop_bound(loop, se, dt, i64);
        if (max == nullptr) {
            return false;
        }
        llvm::SCEVExpander expander(se, pre->getModule()->getDataLayout(), "hoisted");
        llvm::Instruction *at = pre->getTerminator();
        if (!expander.isSafeToExpandAt(max, at)) {
            return false;
        }
        std::vector<llvm::ICmpInst *> checks, budgets;
        for (llvm::BasicBlock *bb : loop.blocks()) {
            for (llvm::Instruction &i : *bb) {
                auto *cmp = llvm::dyn_cast<llvm::ICmpInst>(&i);
                if (cmp == nullptr || !cmp->getOperand(0)->getType()->isIntegerTy(64)) {
                    continue;
                }
                const auto pred = cmp->getPredicate();
                if (i.getMetadata(check_md) != nullptr &&
                    (pred == llvm::ICmpInst::ICMP_ULT || pred == llvm::ICmpInst::ICMP_ULE)) {
                    checks.push_back(cmp);
                }
                if (i.getMetadata(budget_md) != nullptr && pred == llvm::ICmpInst::ICMP_SLT &&
                    llvm::PatternMatch::match(cmp->getOperand(1), llvm::PatternMatch::m_Zero())) {
                    budgets.push_back(cmp);
                }
            }
        }
        llvm::IRBuilder<> b(at);
        llvm::Value *v_max = nullptr;
        auto expand_max = [&] {
            if (v_max == nullptr) {
                v_max = expander.expandCodeFor(max, i64, at);
            }
            return v_max;
        };
        llvm::Value *all = nullptr;
        auto require = [&](llvm::Value *cond) {
            all = all == nullptr ? cond : b.CreateAnd(all, cond);
        };
        std::vector<llvm::ICmpInst *> hoisted_checks, hoisted_budgets;
        for (llvm::ICmpInst *cmp : checks) {
            const auto *x = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(cmp->getOperand(0)));
            const llvm::SCEV *bound = se.getSCEV(cmp->getOperand(1));
            if (x == nullptr || x->getLoop() != &loop || !x->isAffine() ||
                !se.isLoopInvariant(bound, &loop)) {
                continue;
            }
            const auto *step = llvm::dyn_cast<llvm::SCEVConstant>(x->getStepRecurrence(se));
            if (step == nullptr || step->getAPInt().isZero() ||
                step->getAPInt().isMinSignedValue()) {
                continue;
            }
            const llvm::SCEV *first = x->getStart();
            const llvm::SCEV *last = x->evaluateAtIteration(max, se);
            if (!expander.isSafeToExpandAt(first, at) || !expander.isSafeToExpandAt(last, at) ||
                !expander.isSafeToExpandAt(bound, at)) {
                continue;
            }
            llvm::Value *v_first = expander.expandCodeFor(first, i64, at);
            llvm::Value *v_last = expander.expandCodeFor(last, i64, at);
            llvm::Value *v_bound = expander.expandCodeFor(bound, i64, at);
            const bool ule = cmp->getPredicate() == llvm::ICmpInst::ICMP_ULE;
            auto holds = [&](llvm::Value *v) {
                return ule ? b.CreateICmpULE(v, v_bound) : b.CreateICmpULT(v, v_bound);
            };
            // No wrap between first and last: |step| * max fits in 64 bits, and last lies on
            // the step's side of first.
            const uint64_t limit = UINT64_MAX / step->getAPInt().abs().getZExtValue();
            require(b.CreateICmpULE(expand_max(), b.getInt64(limit)));
            require(step->getAPInt().isNegative() ? b.CreateICmpULE(v_last, v_first)
                                                  : b.CreateICmpUGE(v_last, v_first));
            require(holds(v_first));
            require(holds(v_last));
            hoisted_checks.push_back(cmp);
        }
        llvm::PHINode *budget_phi = nullptr;
        uint64_t per_iteration = 0;
        std::set<llvm::Instruction *> cycle; // every decrement on the loop's cycle
        for (llvm::ICmpInst *cmp : budgets) {
            std::set<llvm::Instruction *> decrements;
            std::set<llvm::Value *> seen;
            llvm::PHINode *origin = budget_origin(cmp->getOperand(0), loop, decrements, seen);
            if (origin == nullptr || (budget_phi != nullptr && origin != budget_phi)) {
                continue;
            }
            if (budget_phi == nullptr) {
                // Every decrement on the loop's cycle: from the value that comes back to the
                // header, back to the header's phi.
                std::set<llvm::Value *> seen_cycle;
                if (budget_origin(origin->getIncomingValueForBlock(latch), loop, cycle,
                                  seen_cycle) != origin) {
                    break;
                }
                for (llvm::Instruction *d : cycle) {
                    per_iteration += decrement(*llvm::cast<llvm::BinaryOperator>(d));
                }
                if (per_iteration == 0 || per_iteration > (uint64_t{1} << 32)) {
                    break;
                }
                budget_phi = origin;
                // entry >= (max + 1) * per_iteration, without overflow.
                const uint64_t limit = static_cast<uint64_t>(INT64_MAX) / per_iteration - 1;
                llvm::Value *n = expand_max();
                require(b.CreateICmpULE(n, b.getInt64(limit)));
                llvm::Value *need =
                    b.CreateMul(b.CreateAdd(n, b.getInt64(1)), b.getInt64(per_iteration));
                require(b.CreateICmpSGE(origin->getIncomingValueForBlock(pre), need));
            }
            // At iteration k the header's budget is at least (max + 1 - k) * per_iteration, so a
            // check that sees at most per_iteration taken from it in its iteration cannot fire.
            // That holds for one on the cycle; one on a path off it (before an exit), or one
            // whose decrements CSE computed from the header's budget apart from the cycle's
            // chain, must sum its own.
            uint64_t taken = 0;
            for (auto it = decrements.begin(); it != decrements.end() && taken <= per_iteration;
                 ++it) {
                taken += decrement(*llvm::cast<llvm::BinaryOperator>(*it)); // no overflow
            }
            if (taken > per_iteration) {
                continue;
            }
            hoisted_budgets.push_back(cmp);
        }
        if (all == nullptr) {
            return false;
        }
        for (llvm::ICmpInst *cmp : hoisted_checks) {
            llvm::IRBuilder<> in(cmp->getNextNode());
            llvm::Value *either = in.CreateOr(all, cmp);
            cmp->replaceUsesWithIf(either, [&](llvm::Use &u) { return u.getUser() != either; });
        }
        llvm::Value *not_all = b.CreateNot(all); // in the preheader, so it is loop-invariant
        for (llvm::ICmpInst *cmp : hoisted_budgets) {
            llvm::IRBuilder<> in(cmp->getNextNode());
            llvm::Value *both = in.CreateAnd(not_all, cmp);
            cmp->replaceUsesWithIf(both, [&](llvm::Use &u) { return u.getUser() != both; });
        }
        return true;
    }
};

// The budget counts exactly in every loop, also in the copy that loop versioning left without
// its budget checks: each way through an iteration subtracts the lengths of its blocks, and
// phis join the ways, so the value one iteration hands the next passes a chain of adds (an add
// on each way, then the join's, then the latch's). In each innermost loop, a header phi whose
// value from the latch is its own plus adds of constants (or of selects of two constants)
// through phis of the loop gets that value as one add: its own plus a delta built of the same
// constants (phis and selects of constants, which InstCombine folds), which does not depend on
// it. The chain from one iteration to the next is then one add; the old chain stays for what
// else uses its values (checks, exits).
struct shorten_add_chains : llvm::PassInfoMixin<shorten_add_chains> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        bool changed = false;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                changed |= shorten(*loop);
            }
        }
        return changed ? llvm::PreservedAnalyses::none() : llvm::PreservedAnalyses::all();
    }

    // An amount added that does not depend on the chain: a constant, or a select of two.
    static bool constant_amount(const llvm::Value *v) {
        if (llvm::isa<llvm::ConstantInt>(v)) {
            return true;
        }
        const auto *sel = llvm::dyn_cast<llvm::SelectInst>(v);
        return sel != nullptr && llvm::isa<llvm::ConstantInt>(sel->getTrueValue()) &&
               llvm::isa<llvm::ConstantInt>(sel->getFalseValue());
    }

    // What v adds to the header phi h: a value (computed next to v) such that v == h + it, or
    // null when v is not h plus constant amounts through the loop's phis.
    static llvm::Value *delta(llvm::Value *v, llvm::PHINode *h, llvm::Loop &loop,
                              std::map<llvm::Value *, llvm::Value *> &known,
                              std::set<llvm::Value *> &open) {
        if (v == h) {
            return llvm::ConstantInt::get(h->getType(), 0);
        }
        if (auto it = known.find(v); it != known.end()) {
            return it->second;
        }
        auto *i = llvm::dyn_cast<llvm::Instruction>(v);
        if (i == nullptr || !loop.contains(i) || !open.insert(v).second) {
            return nullptr; // outside the loop, or a cycle that does not pass the header
        }
        llvm::Value *d = nullptr;
        if (auto *add = llvm::dyn_cast<llvm::BinaryOperator>(i);
            add != nullptr && add->getOpcode() == llvm::Instruction::Add &&
            constant_amount(add->getOperand(1))) {
            if (llvm::Value *x = delta(add->getOperand(0), h, loop, known, open)) {
                llvm::IRBuilder<> b(add->getNextNode());
                d = b.CreateAdd(x, add->getOperand(1));
            }
        } else if (auto *phi = llvm::dyn_cast<llvm::PHINode>(i);
                   phi != nullptr && phi->getParent() != loop.getHeader()) {
            std::vector<llvm::Value *> in;
            for (llvm::Value *x : phi->incoming_values()) {
                in.push_back(delta(x, h, loop, known, open));
                if (in.back() == nullptr) {
                    break;
                }
            }
            if (!in.empty() && in.back() != nullptr) {
                auto *p =
                    llvm::PHINode::Create(h->getType(), phi->getNumIncomingValues(), "delta", phi);
                for (unsigned k = 0; k < phi->getNumIncomingValues(); k++) {
                    p->addIncoming(in[k], phi->getIncomingBlock(k));
                }
                d = p;
            }
        }
        open.erase(v);
        known[v] = d;
        return d;
    }

    static bool shorten(llvm::Loop &loop) {
        llvm::BasicBlock *header = loop.getHeader();
        llvm::BasicBlock *latch = loop.getLoopLatch();
        if (latch == nullptr) {
            return false;
        }
        bool changed = false;
        std::vector<llvm::PHINode *> phis;
        for (llvm::PHINode &h : header->phis()) {
            phis.push_back(&h);
        }
        for (llvm::PHINode *h : phis) {
            if (!h->getType()->isIntegerTy(64)) {
                continue;
            }
            llvm::Value *next = h->getIncomingValueForBlock(latch);
            // Already one add (or nothing) from one iteration to the next.
            if (auto *add = llvm::dyn_cast<llvm::BinaryOperator>(next);
                next == h || (add != nullptr && add->getOperand(0) == h)) {
                continue;
            }
            std::map<llvm::Value *, llvm::Value *> known;
            std::set<llvm::Value *> open;
            llvm::Value *d = delta(next, h, loop, known, open);
            if (d == nullptr) {
                continue; // the adds left without a use go at the next cleanup
            }
            llvm::IRBuilder<> b(latch->getTerminator());
            h->setIncomingValue(h->getBasicBlockIndex(latch), b.CreateAdd(h, d, "chain"));
            changed = true;
        }
        return changed;
    }
};

// In the copy of a loop without checks, the budget still counts, only for what comes after
// the loop (the count a completed run reports, the budget tests further on): an add per
// iteration whose values only the exits read. Where it moves by a constant each iteration, as
// another induction variable of step 1 does, its value at an exit is a function of that one's:
// b0 + c * (i - i0). Each exit's value is computed so, on the edge out, and the count leaves
// the loop (InstCombine deletes the phi and add left without a use). A loop that tests the
// budget inside keeps it.
struct counts_at_exits : llvm::PassInfoMixin<counts_at_exits> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        std::vector<rewrite> todo;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                plan(*loop, se, todo);
            }
        }
        if (todo.empty()) {
            return llvm::PreservedAnalyses::all();
        }
        // The loop-invariant parts before the loop, while the analyses still hold.
        const llvm::DataLayout &dl = f.getParent()->getDataLayout();
        llvm::SCEVExpander expander(se, dl, "count");
        std::vector<std::pair<llvm::Value *, llvm::Value *>> starts;
        for (const rewrite &r : todo) {
            llvm::Instruction *at = r.pre->getTerminator();
            starts.emplace_back(expander.expandCodeFor(r.start, r.iv->getType(), at),
                                expander.expandCodeFor(r.iv_start, r.iv->getType(), at));
        }
        // A block on each edge out (one for whatever the edge carries), then the values there.
        std::map<std::pair<llvm::BasicBlock *, llvm::BasicBlock *>, llvm::BasicBlock *> edges;
        for (size_t k = 0; k < todo.size(); k++) {
            const rewrite &r = todo[k];
            auto key = std::pair{r.from, r.phi->getParent()};
            auto it = edges.find(key);
            if (it == edges.end()) {
                it = edges.emplace(key, split(r.from, r.phi->getParent())).first;
            }
            llvm::BasicBlock *on = it->second;
            auto *i = llvm::PHINode::Create(r.iv->getType(), 1, "iv.exit", &on->front());
            i->addIncoming(r.iv, r.from);
            llvm::IRBuilder<> b(on->getTerminator());
            auto [start, iv_start] = starts[k];
            llvm::Value *n = r.iv_step > 0 ? b.CreateSub(i, iv_start) : b.CreateSub(iv_start, i);
            // Through an empty asm, which no analysis sees through (and which emits nothing):
            // loop strength reduction would otherwise make the count an induction variable of
            // the loop again.
            auto *opaque = llvm::InlineAsm::get(
                llvm::FunctionType::get(n->getType(), {n->getType()}, false), "", "=r,0", false);
            llvm::Value *v = b.CreateAdd(
                start, b.CreateMul(b.CreateCall(opaque, {n}), b.getInt(r.step)), "count.exit");
            r.phi->setIncomingValueForBlock(on, v);
        }
        return llvm::PreservedAnalyses::none();
    }

    // A block of its own on every edge from `from` to `to`, which the phis of `to` now name.
    // (The analyses are not kept up to date: the pass uses none after this.)
    static llvm::BasicBlock *split(llvm::BasicBlock *from, llvm::BasicBlock *to) {
        auto *on = llvm::BasicBlock::Create(to->getContext(), "exit.count", to->getParent(), to);
        llvm::BranchInst::Create(to, on);
        from->getTerminator()->replaceSuccessorWith(to, on);
        for (llvm::PHINode &p : to->phis()) {
            // One entry for the edges from `from`, as the new block has one edge to `to`.
            p.setIncomingBlock(static_cast<unsigned>(p.getBasicBlockIndex(from)), on);
            for (int k = p.getBasicBlockIndex(from); k >= 0; k = p.getBasicBlockIndex(from)) {
                p.removeIncomingValue(static_cast<unsigned>(k), false);
            }
        }
        return on;
    }

    // One exit value to compute: phi's incoming value from `from` (in the loop), which is
    // start + step * n in the loop's iteration n, where the induction variable iv is
    // iv_start + iv_step * n (iv_step 1 or -1).
    struct rewrite {
        llvm::PHINode *phi;
        llvm::BasicBlock *from;
        llvm::BasicBlock *pre; // the loop's preheader
        const llvm::SCEV *start;
        llvm::APInt step;
        llvm::PHINode *iv;
        const llvm::SCEV *iv_start;
        int iv_step;
    };

    static void plan(llvm::Loop &loop, llvm::ScalarEvolution &se, std::vector<rewrite> &todo) {
        llvm::BasicBlock *header = loop.getHeader();
        if (loop.getLoopPreheader() == nullptr || loop.getLoopLatch() == nullptr) {
            return;
        }
        // The induction variable of step 1 or -1 that the rewritten exits use.
        llvm::PHINode *iv = nullptr;
        const llvm::SCEV *iv_start = nullptr;
        int iv_step = 0;
        for (llvm::PHINode &p : header->phis()) {
            if (!p.getType()->isIntegerTy(64)) {
                continue;
            }
            const auto *rec = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(&p));
            if (rec != nullptr && rec->getLoop() == &loop && rec->isAffine()) {
                const auto *c = llvm::dyn_cast<llvm::SCEVConstant>(rec->getOperand(1));
                if (c != nullptr && (c->getAPInt().isOne() || c->getAPInt().isAllOnes())) {
                    iv = &p;
                    iv_start = rec->getStart();
                    iv_step = c->getAPInt().isOne() ? 1 : -1;
                    break;
                }
            }
        }
        if (iv == nullptr) {
            return;
        }
        for (llvm::PHINode &h : header->phis()) {
            if (&h == iv || !h.getType()->isIntegerTy(64)) {
                continue;
            }
            // The header phi and the adds of constants and phis in the loop that carry it, if
            // that is all the loop does with it; what uses them outside the loop.
            std::set<llvm::Instruction *> chain{&h};
            std::vector<llvm::Instruction *> work{&h};
            std::vector<llvm::Use *> outside;
            bool ok = true;
            while (ok && !work.empty()) {
                llvm::Instruction *x = work.back();
                work.pop_back();
                for (llvm::Use &u : x->uses()) {
                    auto *user = llvm::cast<llvm::Instruction>(u.getUser());
                    if (!loop.contains(user)) {
                        outside.push_back(&u);
                        continue;
                    }
                    auto *add = llvm::dyn_cast<llvm::BinaryOperator>(user);
                    const bool carries =
                        (add != nullptr && add->getOpcode() == llvm::Instruction::Add &&
                         llvm::isa<llvm::ConstantInt>(add->getOperand(1))) ||
                        (llvm::isa<llvm::PHINode>(user) &&
                         (user->getParent() != header || user == &h));
                    if (!carries) {
                        ok = false;
                        break;
                    }
                    if (chain.insert(user).second) {
                        work.push_back(user);
                    }
                }
            }
            if (!ok || outside.empty()) {
                continue;
            }
            std::vector<rewrite> mine;
            for (llvm::Use *u : outside) {
                auto *phi = llvm::dyn_cast<llvm::PHINode>(u->getUser());
                const auto *rec = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(u->get()));
                const llvm::SCEVConstant *c =
                    rec != nullptr ? llvm::dyn_cast<llvm::SCEVConstant>(rec->getOperand(1))
                                   : nullptr;
                if (phi == nullptr || rec == nullptr || rec->getLoop() != &loop ||
                    !rec->isAffine() || c == nullptr ||
                    !se.isLoopInvariant(rec->getStart(), &loop) ||
                    !loop.contains(phi->getIncomingBlock(*u))) {
                    ok = false;
                    break;
                }
                mine.push_back({phi, phi->getIncomingBlock(*u), loop.getLoopPreheader(),
                                rec->getStart(), c->getAPInt(), iv, iv_start, iv_step});
            }
            if (ok) {
                todo.insert(todo.end(), mine.begin(), mine.end());
            }
        }
    }
};

// Compares against a constant whose result the ranges of their operand decide. After a loop,
// a value that leaves it through several exits is a phi of the values at each exit (LCSSA),
// which scalar evolution does not see through; the range of each is that of the loop's own
// value (an induction variable ranges over what its largest trip count allows). An access after
// a loop at an index it leaves with (`a[i]` once `i < n` ended the loop) thus keeps no check
// when every exit's index is in bounds, nor the slow path behind it (whose values, live from
// the entry, would take registers through the loop).
struct fold_ranged_compares : llvm::PassInfoMixin<fold_ranged_compares> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        std::map<llvm::Value *, llvm::ConstantRange> known;
        std::vector<llvm::ICmpInst *> decided;
        std::vector<bool> outcome;
        for (llvm::BasicBlock &bb : f) {
            for (llvm::Instruction &i : bb) {
                auto *cmp = llvm::dyn_cast<llvm::ICmpInst>(&i);
                if (cmp == nullptr || !cmp->getOperand(0)->getType()->isIntegerTy() ||
                    !llvm::isa<llvm::ConstantInt>(cmp->getOperand(1)) ||
                    llvm::isa<llvm::Constant>(cmp->getOperand(0))) {
                    continue;
                }
                std::set<llvm::Value *> open;
                const llvm::ConstantRange x = range(cmp->getOperand(0), se, known, open, 0);
                const llvm::ConstantRange c(
                    llvm::cast<llvm::ConstantInt>(cmp->getOperand(1))->getValue());
                if (x.icmp(cmp->getPredicate(), c)) {
                    decided.push_back(cmp);
                    outcome.push_back(true);
                } else if (x.icmp(cmp->getInversePredicate(), c)) {
                    decided.push_back(cmp);
                    outcome.push_back(false);
                }
            }
        }
        for (size_t k = 0; k < decided.size(); k++) {
            llvm::ICmpInst *cmp = decided[k];
            cmp->replaceAllUsesWith(llvm::ConstantInt::getBool(cmp->getType(), outcome[k]));
            cmp->eraseFromParent();
        }
        return decided.empty() ? llvm::PreservedAnalyses::all() : llvm::PreservedAnalyses::none();
    }

    // Phis and masks deeper than this are left to scalar evolution alone.
    static constexpr int max_depth = 8;

    // The values v can take: what scalar evolution knows of it, narrowed for a phi to the
    // union of its incoming values' ranges and for a mask, an extension or a truncation to
    // that of its operand's.
    static llvm::ConstantRange range(llvm::Value *v, llvm::ScalarEvolution &se,
                                     std::map<llvm::Value *, llvm::ConstantRange> &known,
                                     std::set<llvm::Value *> &open, int depth) {
        const unsigned bits = v->getType()->getIntegerBitWidth();
        if (auto *c = llvm::dyn_cast<llvm::ConstantInt>(v)) {
            return llvm::ConstantRange(c->getValue());
        }
        llvm::ConstantRange r = se.isSCEVable(v->getType()) ? se.getUnsignedRange(se.getSCEV(v))
                                                            : llvm::ConstantRange::getFull(bits);
        auto *i = llvm::dyn_cast<llvm::Instruction>(v);
        if (i == nullptr || depth >= max_depth) {
            return r;
        }
        if (auto it = known.find(v); it != known.end()) {
            return it->second;
        }
        if (!open.insert(v).second) {
            return r; // a cycle: what scalar evolution says
        }
        auto of = [&](llvm::Value *x) { return range(x, se, known, open, depth + 1); };
        if (auto *phi = llvm::dyn_cast<llvm::PHINode>(i)) {
            llvm::ConstantRange u = llvm::ConstantRange::getEmpty(bits);
            for (llvm::Value *in : phi->incoming_values()) {
                u = u.unionWith(of(in));
                if (u.isFullSet()) {
                    break;
                }
            }
            r = r.intersectWith(u);
        } else if (i->getOpcode() == llvm::Instruction::And &&
                   llvm::isa<llvm::ConstantInt>(i->getOperand(1))) {
            r = r.intersectWith(of(i->getOperand(0)).binaryAnd(of(i->getOperand(1))));
        } else if (llvm::isa<llvm::ZExtInst>(i)) {
            r = r.intersectWith(of(i->getOperand(0)).zeroExtend(bits));
        } else if (llvm::isa<llvm::TruncInst>(i)) {
            r = r.intersectWith(of(i->getOperand(0)).truncate(bits));
        }
        open.erase(v);
        known.emplace(v, r);
        return r;
    }
};

// Memory is addressed through integers (inttoptr of a register), which scalar evolution does
// not follow into pointers, so the loop vectorizer sees no stride. In each innermost loop, an
// access at inttoptr(x) where x = {start, +, step} becomes an access at
// `gep i8, inttoptr(base), x - base`, base being start or, for starts that differ from one met
// before by a small constant, that one's: a pointer with a loop-invariant base and an affine
// offset, the form the vectorizer's dependence and overlap checks work with. The address is the
// same; only its expression changes.
struct rebase_accesses : llvm::PassInfoMixin<rebase_accesses> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        bool changed = false;
        for (llvm::Loop *loop : li.getLoopsInPreorder()) {
            if (loop->getSubLoops().empty()) {
                changed |= rebase(*loop, se);
            }
        }
        return changed ? llvm::PreservedAnalyses::none() : llvm::PreservedAnalyses::all();
    }

    static bool rebase(llvm::Loop &loop, llvm::ScalarEvolution &se) {
        llvm::BasicBlock *pre = loop.getLoopPreheader();
        if (pre == nullptr) {
            return false;
        }
        llvm::SCEVExpander expander(se, pre->getModule()->getDataLayout(), "base");
        llvm::Instruction *at = pre->getTerminator();
        llvm::IRBuilder<> b(pre->getContext());
        // The base pointers made so far, each with the start it was made for.
        struct base {
            const llvm::SCEV *start;
            llvm::Value *value; // the start as an integer
            llvm::Value *ptr;
        };
        std::vector<base> bases;
        bool changed = false;
        for (llvm::BasicBlock *bb : loop.blocks()) {
            for (llvm::Instruction &i : *bb) {
                const unsigned operand = llvm::isa<llvm::LoadInst>(i)    ? 0
                                         : llvm::isa<llvm::StoreInst>(i) ? 1
                                                                         : 2;
                if (operand == 2) {
                    continue;
                }
                auto *cast = llvm::dyn_cast<llvm::IntToPtrInst>(i.getOperand(operand));
                if (cast == nullptr) {
                    continue;
                }
                llvm::Value *x = cast->getOperand(0);
                auto *rec = llvm::dyn_cast<llvm::SCEVAddRecExpr>(se.getSCEV(x));
                if (rec == nullptr || rec->getLoop() != &loop || !rec->isAffine() ||
                    !se.isLoopInvariant(rec->getStart(), &loop) ||
                    !expander.isSafeToExpandAt(rec->getStart(), at)) {
                    continue;
                }
                // A start that differs from one met before by a small constant shares its base
                // (rows of a matrix, fields of a record): the offsets then differ by that
                // constant, which the addressing mode takes, where a base each would take a
                // register each.
                const llvm::SCEV *start = rec->getStart();
                auto it = std::find_if(bases.begin(), bases.end(), [&](const base &e) {
                    const auto *d =
                        llvm::dyn_cast<llvm::SCEVConstant>(se.getMinusSCEV(start, e.start));
                    return d != nullptr && d->getAPInt().abs().ult(uint64_t{1} << 30);
                });
                if (it == bases.end()) {
                    b.SetInsertPoint(at);
                    llvm::Value *v = expander.expandCodeFor(start, x->getType(), at);
                    bases.push_back({start, v, b.CreateIntToPtr(v, cast->getType(), "base")});
                    it = std::prev(bases.end());
                }
                b.SetInsertPoint(&i);
                llvm::Value *offset = b.CreateSub(x, it->value);
                i.setOperand(operand, b.CreateGEP(b.getInt8Ty(), it->ptr, offset));
                changed = true;
            }
        }
        return changed;
    }
};

// The run entry stores the run's input, length, options and engine in the thread's state for
// the runtime only: rt_prepare, rt_check and the helpers read them there, all reached through a
// call, and so does the run's way out after a fault, which only a call's fault takes. In a
// function whose run calls nothing else after them (intrinsics, which never reach the runtime,
// aside), the stores marked lazy_kind have no reader, and go: the common case of a short program
// whose checks were all proved or folded, and of unchecked code. Where a call remains they stay
// where they are: moved to the calls, they would keep their four values live through the run,
// in callee-saved registers.
struct drop_unread_stores : llvm::PassInfoMixin<drop_unread_stores> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        const unsigned lazy = f.getContext().getMDKindID(lazy_kind);
        std::vector<llvm::StoreInst *> stores;
        std::vector<llvm::CallBase *> calls;
        for (llvm::BasicBlock &bb : f) {
            for (llvm::Instruction &i : bb) {
                if (auto *st = llvm::dyn_cast<llvm::StoreInst>(&i);
                    st != nullptr && st->getMetadata(lazy) != nullptr) {
                    stores.push_back(st);
                } else if (auto *call = llvm::dyn_cast<llvm::CallBase>(&i);
                           call != nullptr && !llvm::isa<llvm::IntrinsicInst>(call) &&
                           call->getMetadata(lazy) == nullptr) {
                    calls.push_back(call);
                }
            }
        }
        if (stores.empty()) {
            return llvm::PreservedAnalyses::all();
        }
        // Calls no store reaches come before the run (the direct entry's ways to the engine
        // and, for a program it runs without budget tests, to the run entry that keeps them).
        auto &dt = fam.getResult<llvm::DominatorTreeAnalysis>(f);
        for (llvm::CallBase *call : calls) {
            for (llvm::StoreInst *st : stores) {
                if (dt.dominates(st, call)) {
                    return llvm::PreservedAnalyses::all();
                }
            }
        }
        for (llvm::StoreInst *st : stores) {
            st->eraseFromParent();
        }
        return llvm::PreservedAnalyses::none();
    }
};

// What the optimised pipeline starts with: registers to SSA values, redundant values merged,
// instructions combined, the control flow simplified.
void add_first_cleanup(llvm::FunctionPassManager &fpm) {
    fpm.addPass(llvm::SROAPass());
    fpm.addPass(llvm::EarlyCSEPass(true));
    fpm.addPass(llvm::InstCombinePass());
    fpm.addPass(llvm::SimplifyCFGPass());
}

// Loops that still test something or call out stay rolled for the unroller: the copies loop
// versioning leaves for the runs its test does not cover, where size matters more than speed.
struct keep_checked_loops_rolled : llvm::PassInfoMixin<keep_checked_loops_rolled> {
    llvm::PreservedAnalyses run(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        const unsigned budget = f.getContext().getMDKindID(budget_kind);
        const unsigned check = f.getContext().getMDKindID(check_kind);
        auto &li = fam.getResult<llvm::LoopAnalysis>(f);
        for (llvm::Loop *l : li.getLoopsInPreorder()) {
            const bool checked =
                std::any_of(l->block_begin(), l->block_end(), [&](llvm::BasicBlock *bb) {
                    return std::any_of(bb->begin(), bb->end(), [&](llvm::Instruction &i) {
                        return i.getMetadata(budget) != nullptr ||
                               i.getMetadata(check) != nullptr || llvm::isa<llvm::CallBase>(i);
                    });
                });
            if (checked) {
                llvm::addStringMetadataToLoop(l, "llvm.loop.unroll.disable", 1);
            }
        }
        return llvm::PreservedAnalyses::all();
    }
};

// Settles the direct entry's branch to the run entry (short_of_budget_name). With analyse, a
// copy of the run whose every budget test scalar evolution bounds (the budget the run can have
// used at the test has a largest value: its loops have a largest trip count) runs only with at
// least the largest of those budgets, without the tests, and (reached only without an executed
// pointer) without counting; the run entry takes the other runs. Otherwise, or without analyse
// (the baseline tier), the copy keeps its tests and takes every run, and the run entry goes.
struct bound_budget : llvm::PassInfoMixin<bound_budget> {
    explicit bound_budget(bool analyse_bounds) : analyse(analyse_bounds) {}
    bool analyse;

    llvm::PreservedAnalyses run(llvm::Module &mod, llvm::ModuleAnalysisManager &mam) {
        llvm::Function *marker = mod.getFunction(short_of_budget_name);
        if (marker == nullptr) {
            return llvm::PreservedAnalyses::all();
        }
        auto &fam = mam.getResult<llvm::FunctionAnalysisManagerModuleProxy>(mod).getManager();
        std::vector<llvm::CallInst *> calls;
        for (llvm::User *u : marker->users()) {
            calls.push_back(llvm::cast<llvm::CallInst>(u));
        }
        for (llvm::CallInst *call : calls) {
            llvm::Function &f = *call->getFunction();
            std::optional<uint64_t> bound;
            if (analyse) {
                simplify(f, fam);
                bound = settle(f, *call, fam);
            }
            if (bound) {
                // The run entry now takes only runs with little budget and runs that count:
                // compiled for size, without loop versioning (hoist_checks) or unrolling, it
                // costs less compile time.
                for (llvm::BasicBlock &bb : f) {
                    for (llvm::Instruction &i : bb) {
                        if (auto *c = llvm::dyn_cast<llvm::CallInst>(&i)) {
                            if (llvm::Function *callee = c->getCalledFunction();
                                callee != nullptr && callee->hasInternalLinkage() &&
                                !callee->isDeclaration()) {
                                callee->addFnAttr(llvm::Attribute::OptimizeForSize);
                            }
                        }
                    }
                }
            } else {
                // The loads of the options the call took go with it: the baseline tier has no
                // pass that would drop them from every run.
                llvm::SmallVector<llvm::WeakTrackingVH, 3> args(call->arg_begin(), call->arg_end());
                call->replaceAllUsesWith(llvm::ConstantInt::getFalse(mod.getContext()));
                llvm::BasicBlock *bb = call->getParent();
                call->eraseFromParent();
                llvm::RecursivelyDeleteTriviallyDeadInstructionsPermissive(args);
                llvm::ConstantFoldTerminator(bb, true);
                llvm::removeUnreachableBlocks(f);
            }
        }
        marker->eraseFromParent();
        // Run entries no direct entry reaches any more.
        std::vector<llvm::Function *> unused;
        for (llvm::Function &f : mod) {
            if (f.hasInternalLinkage() && f.use_empty()) {
                unused.push_back(&f);
            }
        }
        for (llvm::Function *f : unused) {
            f->eraseFromParent();
        }
        return llvm::PreservedAnalyses::none();
    }

    // Registers in SSA form and loops in the shape scalar evolution reads.
    static void simplify(llvm::Function &f, llvm::FunctionAnalysisManager &fam) {
        llvm::FunctionPassManager fpm;
        add_first_cleanup(fpm);
        llvm::LoopPassManager lpm;
        lpm.addPass(llvm::LoopRotatePass());
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(lpm)));
        fpm.run(f, fam);
    }

    // The largest budget the copy reached from call's branch can have used at any of its
    // budget tests, which are then dropped, or nothing (the copy unchanged).
    static std::optional<uint64_t> settle(llvm::Function &f, llvm::CallInst &call,
                                          llvm::FunctionAnalysisManager &fam) {
        auto *br = llvm::dyn_cast<llvm::BranchInst>(call.getParent()->getTerminator());
        if (br == nullptr || !br->isConditional() || br->getCondition() != &call) {
            return std::nullopt;
        }
        llvm::BasicBlock *copy = br->getSuccessor(1);
        if (copy->getSinglePredecessor() == nullptr) {
            return std::nullopt;
        }
        auto &dt = fam.getResult<llvm::DominatorTreeAnalysis>(f);
        auto &se = fam.getResult<llvm::ScalarEvolutionAnalysis>(f);
        llvm::Value *budget = call.getArgOperand(0);
        const unsigned budget_md = f.getContext().getMDKindID(budget_kind);
        const unsigned executed_md = f.getContext().getMDKindID(executed_kind);
        std::vector<llvm::ICmpInst *> tests;
        std::vector<llvm::LoadInst *> executed;
        for (llvm::BasicBlock &bb : f) {
            if (!dt.dominates(copy, &bb)) {
                continue;
            }
            for (llvm::Instruction &i : bb) {
                if (auto *cmp = llvm::dyn_cast<llvm::ICmpInst>(&i);
                    cmp != nullptr && cmp->getMetadata(budget_md) != nullptr) {
                    tests.push_back(cmp);
                } else if (auto *load = llvm::dyn_cast<llvm::LoadInst>(&i);
                           load != nullptr && load->getMetadata(executed_md) != nullptr) {
                    executed.push_back(load);
                }
            }
        }
        uint64_t bound = 0;
        usage used{se, fam.getResult<llvm::LoopAnalysis>(f), {}, {}};
        for (llvm::ICmpInst *cmp : tests) {
            // budget - used <s 0, as check_budget emits it.
            if (cmp->getPredicate() != llvm::CmpInst::ICMP_SLT ||
                !llvm::PatternMatch::match(cmp->getOperand(1), llvm::PatternMatch::m_Zero())) {
                return std::nullopt;
            }
            const std::optional<int64_t> most = used.most(cmp->getOperand(0), budget);
            if (!most) {
                return std::nullopt;
            }
            bound = std::max(bound, static_cast<uint64_t>(std::max<int64_t>(*most, 0)));
        }
        llvm::IRBuilder<> b(&call);
        llvm::Value *wanted = call.getArgOperand(1);
        llvm::Value *executed_ptr = call.getArgOperand(2);
        auto *null =
            llvm::ConstantPointerNull::get(llvm::cast<llvm::PointerType>(executed_ptr->getType()));
        llvm::Value *short_of = b.CreateOr(b.CreateICmpULT(wanted, b.getInt64(bound)),
                                           b.CreateICmpNE(executed_ptr, null));
        call.replaceAllUsesWith(short_of);
        call.eraseFromParent();
        for (llvm::ICmpInst *cmp : tests) {
            cmp->replaceAllUsesWith(llvm::ConstantInt::getFalse(cmp->getType()));
            cmp->eraseFromParent();
        }
        for (llvm::LoadInst *load : executed) {
            load->replaceAllUsesWith(null);
            load->eraseFromParent();
        }
        return bound;
    }

    // Budgets of more than this are not bounds worth testing (and stay far from overflow).
    static constexpr int64_t largest_bound = int64_t{1} << 48;

    // The most budget a run can have used where v is what is left of it, counted from base (v =
    // base - used), or nothing when that has no known bound:
    // - scalar evolution's range of base - v (an affine loop's budget: its range over the trip
    //   count);
    // - for the header phi of a loop with a largest trip count T, what the loop's entry had used
    //   plus T times the most one iteration uses (each value the loop hands back to the header,
    //   counted from the header's);
    // - for another phi, the largest of its incoming values';
    // - for v = w + c, what w had used less c's least value.
    struct usage {
        llvm::ScalarEvolution &se;
        llvm::LoopInfo &li;
        std::map<std::pair<llvm::Value *, llvm::Value *>, std::optional<int64_t>> known;
        std::set<std::pair<llvm::Value *, llvm::Value *>> open;

        static constexpr int max_depth = 32;

        std::optional<int64_t> most(llvm::Value *v, llvm::Value *base, int depth = 0) {
            if (v == base) {
                return 0;
            }
            const std::pair key{v, base};
            if (auto it = known.find(key); it != known.end()) {
                return it->second;
            }
            std::optional<int64_t> m;
            const llvm::ConstantRange r =
                se.getSignedRange(se.getMinusSCEV(se.getSCEV(base), se.getSCEV(v)));
            if (!r.isFullSet() && r.getSignedMin().sge(0) && r.getSignedMax().slt(largest_bound)) {
                m = r.getSignedMax().getSExtValue();
            } else if (depth < max_depth && open.insert(key).second) {
                m = through(v, base, depth + 1);
                open.erase(key);
            }
            // Only finished answers are kept: a value met again inside its own cycle is
            // unbounded there, not for ever.
            if (open.count(key) == 0) {
                known.emplace(key, m);
            }
            return m;
        }

        static std::optional<int64_t> sum(std::optional<int64_t> a, int64_t b) {
            if (!a || *a > largest_bound || b > largest_bound || *a + b >= largest_bound) {
                return std::nullopt;
            }
            return *a + b;
        }

        std::optional<int64_t> through(llvm::Value *v, llvm::Value *base, int depth) {
            if (auto *phi = llvm::dyn_cast<llvm::PHINode>(v)) {
                llvm::Loop *l = li.getLoopFor(phi->getParent());
                const bool header = l != nullptr && l->getHeader() == phi->getParent();
                int64_t trips = 0;
                if (header) {
                    const auto *c =
                        llvm::dyn_cast<llvm::SCEVConstant>(se.getConstantMaxBackedgeTakenCount(l));
                    if (c == nullptr || c->getAPInt().uge(largest_bound)) {
                        return std::nullopt;
                    }
                    trips = static_cast<int64_t>(c->getAPInt().getZExtValue());
                }
                int64_t entered = 0, per_trip = 0;
                for (unsigned k = 0; k < phi->getNumIncomingValues(); k++) {
                    const bool back = header && l->contains(phi->getIncomingBlock(k));
                    const std::optional<int64_t> x =
                        most(phi->getIncomingValue(k), back ? phi : base, depth);
                    if (!x) {
                        return std::nullopt;
                    }
                    int64_t &most_of_way = back ? per_trip : entered;
                    most_of_way = std::max(most_of_way, *x);
                }
                if (per_trip > 0 && trips > largest_bound / per_trip) {
                    return std::nullopt;
                }
                return sum(entered, trips * per_trip);
            }
            if (auto *add = llvm::dyn_cast<llvm::BinaryOperator>(v);
                add != nullptr && add->getOpcode() == llvm::Instruction::Add) {
                for (int k = 0; k < 2; k++) {
                    const llvm::ConstantRange c =
                        se.getSignedRange(se.getSCEV(add->getOperand(1 - k)));
                    if (c.isFullSet() || c.getSignedMin().sle(-largest_bound) ||
                        c.getSignedMin().sge(largest_bound)) {
                        continue;
                    }
                    // v = w + c: used(v) = used(w) - c, at most used(w) - min(c).
                    if (std::optional<int64_t> w = most(add->getOperand(k), base, depth)) {
                        return sum(w, std::max<int64_t>(-c.getSignedMin().getSExtValue(), 0));
                    }
                }
            }
            return std::nullopt;
        }
    };
};

// Runs passes over a module with the analyses they need.
template <class F>
void run_passes(llvm::Module &mod, llvm::TargetMachine &tm, F add_passes) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(&tm);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm;
    add_passes(mpm);
    mpm.run(mod, mam);
}

} // namespace

void promote_registers(llvm::Module &mod, llvm::TargetMachine &tm) {
    run_passes(mod, tm, [](llvm::ModulePassManager &mpm) {
        mpm.addPass(bound_budget(false));
        mpm.addPass(llvm::createModuleToFunctionPassAdaptor(llvm::SROAPass()));
    });
}

void optimise(llvm::Module &mod, llvm::TargetMachine &tm) {
    run_passes(mod, tm, [](llvm::ModulePassManager &mpm) {
        llvm::FunctionPassManager fpm;
        add_first_cleanup(fpm);
        llvm::LoopPassManager lpm;
        lpm.addPass(llvm::LoopRotatePass());
        lpm.addPass(llvm::LICMPass(llvm::LICMOptions()));
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(lpm), true));
        fpm.addPass(llvm::GVNPass());
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        fpm.addPass(hoist_checks());
        llvm::LoopPassManager unswitch;
        unswitch.addPass(llvm::SimpleLoopUnswitchPass(true));
        unswitch.addPass(llvm::LoopRotatePass());
        unswitch.addPass(llvm::IndVarSimplifyPass());
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(unswitch), true));
        fpm.addPass(shorten_add_chains());
        fpm.addPass(counts_at_exits());
        fpm.addPass(fold_ranged_compares());
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        // The copy without checks, its dead slow paths gone, calls nothing: loads of what it
        // does not store (values a program keeps in its frame) can now leave it. The versioning
        // test of an inner loop of a nest, which often depends only on what the outer loops keep
        // fixed, leaves them too.
        llvm::LoopPassManager after_unswitch;
        after_unswitch.addPass(llvm::LICMPass(llvm::LICMOptions()));
        fpm.addPass(llvm::createFunctionToLoopPassAdaptor(std::move(after_unswitch), true));
        fpm.addPass(llvm::LoopSimplifyPass());
        fpm.addPass(rebase_accesses());
        fpm.addPass(llvm::LoopVectorizePass());
        // Short loops without checks are unrolled (twice at most, host.cpp): such a loop pays
        // its backward branch and its exit test once per two iterations, as clang -O2 code
        // does.
        fpm.addPass(keep_checked_loops_rolled());
        fpm.addPass(llvm::LoopUnrollPass(llvm::LoopUnrollOptions(2)));
        fpm.addPass(llvm::InstCombinePass());
        fpm.addPass(llvm::SimplifyCFGPass());
        fpm.addPass(llvm::JumpThreadingPass());
        fpm.addPass(drop_unread_stores());
        mpm.addPass(llvm::AlwaysInlinerPass());
        mpm.addPass(bound_budget(true));
        mpm.addPass(llvm::createModuleToFunctionPassAdaptor(std::move(fpm)));
    });
}

} // namespace bpftime::vm::jit
