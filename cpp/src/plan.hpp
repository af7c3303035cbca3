// How a tensor [outer, channels, inner] is cut into work, by its shape alone.
//
// Two loop structures cover every layout:
//  - planar (inner > 1, e.g. NCHW): a channel's values are `outer` contiguous
//    runs of `inner`; a *unit* is a chunk of at most kChunk values of one run.
//  - rows (inner == 1, e.g. NHWC, (N, C)): channels are contiguous; a *unit*
//    is a tile of `tile_rows` rows by a block of at most kChannelBlock
//    channels, vectorized across channels.
// The units of one channel (or channel block) are split into `groups`
// consecutive ranges of `group_units` units. Reductions produce one partial
// per (group, channel), always in unit order, then merge the partials in
// group order. None of this depends on the thread count, so neither do the
// results.
#pragma once

#include <algorithm>
#include <cstdint>

namespace bnorm {

constexpr int64_t kChunk = 4096;            // planar unit, elements
constexpr int64_t kChannelBlock = 256;      // rows layout, channels per block
constexpr int64_t kTileBytes = 32 * 1024;   // rows layout, bytes per tile
constexpr int64_t kTargetTasks = 64;        // reduction tasks to aim for
constexpr int64_t kMinTaskElements = 16384; // smallest reduction task

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int64_t outer, channels, inner;
  bool rows;
  // planar
  int64_t chunks_per_run;  // ceil(inner / kChunk)
  // rows
  int64_t block;           // channels per block
  int64_t blocks;          // ceil(channels / block)
  int64_t tile_rows;       // rows per tile
  // both
  int64_t units;           // units per channel (planar) or block (rows)
  int64_t group_units;
  int64_t groups;

  Plan(int64_t outer_, int64_t channels_, int64_t inner_, int64_t elem_size)
      : outer(outer_), channels(channels_), inner(inner_), rows(inner_ == 1) {
    int64_t lanes;           // independent reduction streams (channel units)
    int64_t unit_elements;   // elements in one unit (upper bound)
    if (rows) {
      chunks_per_run = 1;
      block = std::min<int64_t>(channels, kChannelBlock);
      if (block < 1) block = 1;
      blocks = ceil_div(channels, block);
      tile_rows = std::max<int64_t>(1, kTileBytes / (block * elem_size));
      units = ceil_div(outer, tile_rows);
      lanes = blocks;
      unit_elements = tile_rows * block;
    } else {
      block = 1;
      blocks = channels;
      tile_rows = 1;
      chunks_per_run = ceil_div(inner, kChunk);
      units = outer * chunks_per_run;
      lanes = channels;
      unit_elements = std::min(inner, kChunk);
    }
    if (units < 1) units = 1;
    int64_t want = ceil_div(kTargetTasks, std::max<int64_t>(lanes, 1));
    int64_t by_size = std::max<int64_t>(
        1, units * unit_elements / kMinTaskElements);
    int64_t g = std::max<int64_t>(1, std::min({want, by_size, units}));
    group_units = ceil_div(units, g);
    groups = ceil_div(units, group_units);
  }

  // Planar unit u of a channel: run o = u / chunks_per_run, elements
  // [begin, end) of that run.
  void planar_unit(int64_t u, int64_t* o, int64_t* begin, int64_t* end) const {
    *o = u / chunks_per_run;
    *begin = (u % chunks_per_run) * kChunk;
    *end = std::min(inner, *begin + kChunk);
  }
};

// count, mean and centered sum of squares of a set of values
struct Moments {
  double n = 0, mean = 0, m2 = 0;
};

// Chan, Golub & LeVeque's pairwise update: exact in exact arithmetic and
// free of the cancellation of sum(x^2) - sum(x)^2 / n.
inline void merge_into(Moments& a, const Moments& b) {
  if (b.n == 0) return;
  if (a.n == 0) {
    a = b;
    return;
  }
  const double n = a.n + b.n;
  const double delta = b.mean - a.mean;
  const double fb = b.n / n;
  a.mean += delta * fb;
  a.m2 += b.m2 + delta * delta * a.n * fb;
  a.n = n;
}

}  // namespace bnorm
