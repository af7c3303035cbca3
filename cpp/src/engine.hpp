// The one engine every training-side op is composed of:
//
//   reduce  -- a reducer (MomentsReducer: statistics; SumsReducer: the
//              backward's sums) forms one partial per (group, channel), with
//              the layout's loops (reduce_planar.hpp, reduce_rows.hpp);
//   finish  -- the partials of each channel merged in group order, and the
//              per-channel results (coefficients, saved statistics,
//              gradients of weight and bias, or the split phases' sums);
//   apply   -- an elementwise map over the tensor with those coefficients
//              (elementwise.hpp), or nothing.
//
// forward_training = reduce(moments) + finish + apply(normalize);
// moments = reduce(moments) + finish(store); backward = reduce(sums) +
// finish + apply(dx); backward_sums = reduce(sums) + finish(store). So the
// split phases run the single-process code itself.
//
// Three schedules compute the same bits. Whole blocks: when a planar block
// of channels fits in a core's cache (Plan::whole_block), one thread reduces
// it and finishes it, and then, for a tensor larger than the last-level
// cache, applies the map while the block is still in L2 (fused: backward,
// and forward with long runs); otherwise the map runs after all blocks,
// over the whole tensor (deferred).
// Phases: otherwise the (lane, group) tasks are dealt to the threads, then
// the channels are finished, then the map runs, each phase on all threads.
// Per channel, all reduce the same groups and merge them in group order.
#pragma once

#include <algorithm>
#include <cstdint>

#include "elementwise.hpp"
#include "kernels.hpp"
#include "reduce_planar.hpp"
#include "reduce_rows.hpp"
#include "threading.hpp"

namespace bnorm {
namespace BNORM_ISA_NS {

// Statistics of x: (count, mean, M2) per channel.
template <class T>
struct MomentsReducer {
  using Acc = Moments;
  static constexpr int64_t kInBytes = sizeof(T);  // bytes read per value
  const T* x;
  // Group g of the channels [c0, c0 + cw) into out[0..cw), from empty.
  void group(const Plan& p, int64_t c0, int64_t cw, int64_t g, Acc* out,
             double* scratch) const {
    if (p.rows)
      rows_moments(p, x, c0, cw, g, out, scratch);
    else
      planar_moments(p, x, c0, cw, g, out);
  }
};

// The backward's sums: sum(g), sum(g * (x - mean)), g = dy behind mask M.
template <int M, class T>
struct SumsReducer {
  using Acc = Sums;
  static constexpr int64_t kInBytes = 2 * sizeof(T);  // dy and x
  const T* dy;
  const T* x;
  const Param<T>* mean;
  MaskArgs<T> mask;
  void group(const Plan& p, int64_t c0, int64_t cw, int64_t g, Acc* out,
             double* scratch) const {
    if (p.rows)
      rows_sums<M>(p, dy, x, mean, mask, c0, cw, g, out, scratch);
    else
      planar_sums<M>(p, dy, x, mean, mask, c0, cw, g, out);
  }
};

// An elementwise map `op` with the coefficients `fill` gives it (see
// sweep), over the whole tensor or over a block of channels.
template <class T, class Op, class Fill>
struct Apply {
  static constexpr int64_t kBytes = Op::kArrays * sizeof(T);  // moved per value
  static constexpr int64_t kValueBytes = sizeof(T);
  const Op& op;
  const Fill& fill;
  void all(const Plan& p, int tid, int n) const { sweep<T>(p, op, fill, tid, n); }
  void channels(const Plan& p, int64_t c0, int64_t cw) const {
    sweep_channels<T>(p, op, fill, c0, cw);
  }
};

// The split phases' finish: each channel's two results stored as doubles
// (Moments: mean and m2; Sums: sum_dy and sum_dy_xmu).
inline void results(const Moments& m, double* a, double* b) { *a = m.mean, *b = m.m2; }
inline void results(const Sums& s, double* a, double* b) { *a = s.g, *b = s.gx; }
struct StoreResults {
  double *first, *second;
  template <class Acc>
  void operator()(int64_t c0, int64_t cw, const Acc* tot) const {
    for (int64_t j = 0; j < cw; ++j) results(tot[j], first + c0 + j, second + c0 + j);
  }
};

// No elementwise pass (moments, backward_sums).
struct NoApply {
  static constexpr int64_t kBytes = 0;
  static constexpr int64_t kValueBytes = 1;
  void all(const Plan&, int, int) const {}
  void channels(const Plan&, int64_t, int64_t) const {}
};

// reduce -> finish -> apply. finish(c0, cw, tot) receives channels
// [c0, c0 + cw) (cw <= kChannelBlock) with their merged results. `block`
// > 0 takes planar blocks of that many channels whole (Plan::whole_block);
// 0 runs the phases, with partials and scratch from `work`. reduce = false:
// nothing to reduce (finish gets empty results), only finish and apply.
// Bytes of one channel's run below which a forward map is not fused into
// the block (measured: 784-byte runs 1.1-1.6x faster deferred, 3136-byte
// runs 1.05-1.4x faster fused; docs/design.md).
constexpr int64_t kFusedMinRun = 2048;

// Bytes a planar block reads per outer index (its channels' runs, one
// contiguous span) below which it is widened (planar_block).
constexpr int64_t kMinBlockSpan = 16 * 1024;

// The planar block the engine takes whole (Plan::whole_block): channels
// whose data fit in a core's L2; else, for a tensor larger than the
// last-level cache, channels whose data fit in half a thread's share of it
// (the block's reduction then its map while it is in L3: the inputs come
// from memory once instead of twice). Against the phases, in one process
// alternating, same bits, 2 threads: float32 32x128x112x112 training
// forward 1.34x, backward 1.43x (with ReLU 1.42x), 8x64x224x224 1.31-1.45x;
// float16/bfloat16 backward 1.08-1.23x (with ReLU 1.18-1.48x), training
// 1.0x; 1 thread float32 1.01-1.17x. A whole thread's share measured less
// (2 threads 1.04-1.23x, 1 thread 0.94-1.03x).
// Whether the arrays a map moves over the whole tensor exceed the
// last-level cache.
template <class App>
bool moves_past_l3(const Plan& p) {
  return static_cast<double>(p.outer * p.channels * p.inner) * App::kBytes >= l3_cache_bytes();
}

template <class R, class App>
int64_t planar_block(const Plan& p, int nt) {
  const int64_t b = p.whole_block(nt, R::kInBytes, App::kBytes, l2_cache_bytes());
  const bool past_l3 = moves_past_l3<App>(p);
  const int64_t l3_share = l3_cache_bytes() / (2 * std::max(nt, 1));
  if (b > 0 && b * p.inner * App::kValueBytes < kMinBlockSpan) {
    // Short runs (56x56 maps and smaller): an L2-sized block reads each
    // outer index's runs as a span of a few KiB, and the hardware
    // prefetchers start over at every one. Widened to as many channels as
    // fit in half a thread's share of L3 (the map follows each block), or up
    // to kMaxPlanarBlock (the map runs after all blocks): against L2 blocks,
    // in one process alternating, same bits, backward 32x128x56x56 1.3x
    // (float16, 2 threads; 1.23-1.30x in four runs), 32x64x56x56 1.12-1.26x
    // and 16x64x56x56 1.24-1.31x (float32, 1 and 2 threads), bfloat16
    // 1.15-1.26x; shapes with longer runs keep their blocks.
    const int64_t wide = past_l3 ? p.whole_block(nt, R::kInBytes, App::kBytes, l3_share)
                                 : p.whole_block(nt, R::kInBytes, R::kInBytes, INT64_MAX / 8);
    return std::max(b, wide);
  }
  if (b > 0 || !past_l3) return b;
  return p.whole_block(nt, R::kInBytes, App::kBytes, l3_share);
}

template <class R, class Fin, class App>
void run_engine(const Plan& p, const R& red, const Fin& finish, const App& apply,
                bool apply_active, int64_t block, bool reduce, const Work& work) {
  using Acc = typename R::Acc;
  const int64_t C = p.channels;
  const int nt = work.threads;
  if (block > 0 && reduce) {
    // The map follows each block's reduction while the block is in L2 only
    // when the arrays it moves are larger than the last-level cache (the
    // second read of the inputs would come from memory), and then only when
    // that saves more than one input per value (backward: dy and x) or the
    // runs are long: a forward map in short runs stores a block in many
    // short spans, which cost more than reading x again (docs/design.md).
    // Otherwise it runs after all blocks, as one sweep over the tensor.
    const bool fused =
        apply_active && moves_past_l3<App>(p) &&
        (R::kInBytes > App::kValueBytes || p.inner * App::kValueBytes >= kFusedMinRun);
    Dealer blocks(ceil_div(C, block));
    auto blocks_phase = [&](int, int) {
      Acc tot[kMaxPlanarBlock], acc[kMaxPlanarBlock];
      double scratch[3 * kMaxPlanarBlock];  // (planar reducers need none)
      for (int64_t blk; blocks.take(&blk);) {
        const int64_t c0 = blk * block, cw = std::min(block, C - c0);
        for (int64_t j = 0; j < cw; ++j) tot[j] = Acc();
        for (int64_t g = 0; g < p.groups; ++g) {
          red.group(p, c0, cw, g, acc, scratch);
          for (int64_t j = 0; j < cw; ++j) merge_into(tot[j], acc[j]);
        }
        for (int64_t j = 0; j < cw; ++j) canonical_nan(tot[j]);
        finish(c0, cw, tot);
        if (fused) apply.channels(p, c0, cw);
      }
    };
    if (apply_active && !fused)
      parallel(nt, blocks_phase, [&](int tid, int n) { apply.all(p, tid, n); });
    else
      parallel(nt, blocks_phase);
    return;
  }
  Acc* part = static_cast<Acc*>(work.partials);
  // (lane, group) pairs; rows tensors with at least as many groups as
  // threads take groups of rows across all channels instead (the lower ones
  // of the same count), read row after row (contiguous memory).
  Dealer tasks(p.lanes * p.groups);
  auto reduce_phase = [&](int tid, int n) {
    if (p.rows && p.groups >= n) {
      double* scratch = work.scratch + tid * scratch_stride(3 * C);
      for (int64_t g; tasks.take(&g) && g < p.groups;)
        red.group(p, 0, C, g, part + g * C, scratch);
      return;
    }
    Acc acc[kChannelBlock];
    double lane_scratch[3 * kChannelBlock];
    for (int64_t t; tasks.take(&t);) {
      const int64_t lane = t / p.groups, g = t % p.groups;
      int64_t c0, cw;
      p.lane_channels(lane, &c0, &cw);
      red.group(p, c0, cw, g, acc, lane_scratch);
      for (int64_t j = 0; j < cw; ++j) part[g * C + c0 + j] = acc[j];
    }
  };
  auto finish_phase = [&](int tid, int n) {
    int64_t c_begin, c_end;
    share(C, tid, n, &c_begin, &c_end);
    Acc tot[kChannelBlock];
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kChannelBlock) {
      const int64_t cw = std::min(kChannelBlock, c_end - c0);
      // group by group across the channels: per channel the groups merge
      // in group order as before, but the channels' chains of dependent
      // merges (each with a division) now overlap instead of running one
      // after another
      for (int64_t j = 0; j < cw; ++j) tot[j] = Acc();
      if (reduce)
        for (int64_t g = 0; g < p.groups; ++g) {
          const Acc* pg = part + g * C + c0;
          for (int64_t j = 0; j < cw; ++j) merge_into(tot[j], pg[j]);
        }
      for (int64_t j = 0; j < cw; ++j) canonical_nan(tot[j]);
      finish(c0, cw, tot);
    }
  };
  auto apply_phase = [&](int tid, int n) { apply.all(p, tid, n); };
  if (reduce && apply_active)
    parallel(nt, reduce_phase, finish_phase, apply_phase);
  else if (reduce)
    parallel(nt, reduce_phase, finish_phase);
  else if (apply_active)
    parallel(nt, finish_phase, apply_phase);
  else
    parallel(nt, finish_phase);
}

}  // namespace BNORM_ISA_NS
}  // namespace bnorm
