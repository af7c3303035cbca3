// How a tensor [outer, channels, inner] is cut into work, by its shape alone.
//
// Two loop structures cover every layout:
//  - planar (inner > 1, e.g. NCHW): a channel's values are `outer` contiguous
//    runs of `inner`. A *unit* is up to kChunk values of one channel: several
//    whole runs when runs are short, or a chunk of one run when they are long.
//  - rows (inner == 1, e.g. NHWC, (N, C)): channels are contiguous. A *unit*
//    is a tile of `tile_rows` rows of one block of up to kChannelBlock
//    channels, vectorized across channels.
// A *lane* is one channel (planar) or one channel block (rows). The units of
// a lane are split into `groups` ranges of `group_units` consecutive units.
// Reductions form one partial per (group, channel) in unit order and merge
// the partials in group order. Whether one thread does a whole lane or the
// groups are spread over threads, the arithmetic is the same, so results
// never depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

namespace bnorm {

constexpr int64_t kChunk = 4096;            // planar unit, elements
constexpr int64_t kChannelBlock = 256;      // rows layout, channels per lane
constexpr int64_t kTileBytes = 256 * 1024;  // rows layout, bytes per unit
constexpr int64_t kMaxTileRows = 4096;      // rows layout, rows per unit
constexpr int64_t kTargetTasks = 64;        // reduction pieces to aim for
constexpr int64_t kMinTaskElements = 16384; // smallest reduction piece
constexpr int64_t kMaxPlanarBlock = 32;     // short channels taken at once

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int64_t outer, channels, inner;
  bool rows;
  // planar
  int64_t runs_per_unit;   // whole runs in one unit (short runs)
  int64_t chunks_per_run;  // units per run (long runs)
  // rows
  int64_t tile_rows;       // rows per unit
  // both
  int64_t block;           // channels per lane (1 when planar)
  int64_t lanes;           // ceil(channels / block)
  int64_t units;           // units per lane
  int64_t group_units;
  int64_t groups;

  // With schedule false only the shape is set (outer, channels, inner,
  // rows) and the rest is zero: enough for a pass that only streams.
  Plan(int64_t outer_, int64_t channels_, int64_t inner_, int64_t elem_size,
       bool schedule = true)
      : outer(outer_), channels(channels_), inner(inner_), rows(inner_ == 1),
        runs_per_unit(0), chunks_per_run(0), tile_rows(0), block(0), lanes(0), units(0),
        group_units(0), groups(0) {
    if (schedule) make_schedule(elem_size);
  }

 private:
  void make_schedule(int64_t elem_size) {
    int64_t unit_elements;
    if (rows) {
      runs_per_unit = chunks_per_run = 1;
      block = std::max<int64_t>(1, std::min<int64_t>(channels, kChannelBlock));
      tile_rows = std::min(kMaxTileRows,
                           std::max<int64_t>(1, kTileBytes / (block * elem_size)));
      units = ceil_div(outer, tile_rows);
      unit_elements = tile_rows * block;
    } else {
      block = 1;
      tile_rows = 1;
      if (inner >= kChunk / 2) {
        runs_per_unit = 1;
        chunks_per_run = ceil_div(inner, kChunk);
      } else {
        runs_per_unit = std::max<int64_t>(1, kChunk / std::max<int64_t>(inner, 1));
        chunks_per_run = 1;
      }
      units = ceil_div(outer, runs_per_unit) * chunks_per_run;
      unit_elements = std::min(inner, kChunk) * runs_per_unit;
    }
    lanes = ceil_div(channels, block);
    if (units < 1) units = 1;
    const int64_t want = ceil_div(kTargetTasks, std::max<int64_t>(lanes, 1));
    const int64_t by_size =
        std::max<int64_t>(1, units * unit_elements / kMinTaskElements);
    const int64_t g = std::max<int64_t>(1, std::min({want, by_size, units}));
    group_units = ceil_div(units, g);
    groups = ceil_div(units, group_units);
  }

 public:

  // Planar unit u of a channel: runs [o0, o1), elements [b, e) of each.
  void planar_unit(int64_t u, int64_t* o0, int64_t* o1, int64_t* b,
                   int64_t* e) const {
    *o0 = (u / chunks_per_run) * runs_per_unit;
    *o1 = std::min(outer, *o0 + runs_per_unit);
    *b = (u % chunks_per_run) * kChunk;
    *e = std::min(inner, *b + kChunk);
  }

  // Rows unit u: rows [r0, r1).
  void rows_unit(int64_t u, int64_t* r0, int64_t* r1) const {
    *r0 = u * tile_rows;
    *r1 = std::min(outer, *r0 + tile_rows);
  }

  // Channels [c0, c0 + cw) of lane l.
  void lane_channels(int64_t l, int64_t* c0, int64_t* cw) const {
    *c0 = l * block;
    *cw = std::min(block, channels - *c0);
  }

  // Units [u0, u1) of group g.
  void group_range(int64_t g, int64_t* u0, int64_t* u1) const {
    *u0 = g * group_units;
    *u1 = std::min(units, *u0 + group_units);
  }

  // Bytes of one lane's data, at elem_size bytes per value.
  int64_t lane_bytes(int64_t elem_size) const {
    return outer * inner * block * elem_size;
  }

  // Channels one thread takes at once so that it can reduce them and then
  // apply the elementwise pass while their data is still in its cache (for
  // a tensor larger than the last-level cache; see run_engine); 0
  // when the groups of a lane should rather be spread over threads. Only
  // the schedule depends on this, never the arithmetic. Planar blocks group
  // several short channels so that each outer index gives one contiguous
  // span (friendly to the hardware prefetcher). in_size: bytes per value of
  // the arrays the reduction reads (x; dy and x), which must fit for the
  // block path to pay; all_size: of every array the block's passes read and
  // write (and y; and dx), which sets how many channels a block takes:
  // sizing blocks by their inputs alone let the output evict them before
  // the elementwise pass read them again, and cost 10-15% on tensors larger
  // than L2 (measured).
  int64_t whole_block(int nt, int64_t in_size, int64_t all_size,
                      int64_t cache_bytes) const {
    // Rows layout: a lane is a strided column of segments (256 channels of
    // each row), which streams worse than whole rows; measured, the
    // three-phase pass (reduce all lanes, merge, sweep whole rows) was as
    // fast or faster on every channels-last and (N, C) shape whose lanes fit
    // in L2 -- up to 1.6x on (256, 1024) -- as the tensor is in L3 by then.
    if (rows) return 0;
    // Most of the cache: AMD and recent Intel L3s keep what L2 evicts, so
    // an overflowing lane still comes back from L3 rather than memory.
    const int64_t budget = cache_bytes * 7 / 8;
    if (lane_bytes(in_size) > budget) return 0;
    const int64_t all = std::max<int64_t>(1, lane_bytes(all_size));
    const int64_t cb = std::clamp<int64_t>(budget / all, 1, kMaxPlanarBlock);
    if (nt <= 1) return cb;
    // The fewest blocks (of ceil(channels / count) channels each, the last
    // one shorter) whose count evens out the threads' shares: a multiple of
    // nt, or at least 8 per thread. (A count that one step of rounding up
    // did not even out used to fall back to the phases.)
    for (int64_t want = ceil_div(channels, cb);; ++want) {
      const int64_t b = ceil_div(channels, want);
      const int64_t tasks = ceil_div(channels, b);
      if (tasks % nt == 0 || tasks >= 8 * nt) return b;
      if (b == 1) return 0;
    }
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

// (count, mean, M2) from sums of deviations from a shift K:
// s1 = sum(x - K), s2 = sum((x - K)^2), M2 = s2 - s1 (s1 / n). Exact in exact
// arithmetic for any K. With K one of the values themselves, (mean - K)^2 is
// at most M2, so s2 <= (n + 1) M2: the subtraction loses at most log10(n + 1)
// of double's 16 digits (under 4 for the units of this plan), whatever the
// data's offset -- unlike sum(x^2) - sum(x)^2 / n, which loses them all.
inline Moments from_shifted(double n, double shift, double s1, double s2) {
  const double q = s1 / n;
  Moments m;
  m.n = n;
  m.mean = shift + q;
  m.m2 = s2 - s1 * q;
  return m;
}

// The backward's sums of a channel: g = sum(dy), gx = sum(dy * (x - mean)).
struct Sums {
  double g = 0, gx = 0;
};

// The merged results of a channel with every NaN made the default quiet
// NaN. When several NaNs meet in a sum, which payload survives depends on
// the operand order the compiler chose for each add, which may differ
// between the instruction-set copies; a channel's NaN statistic carries no
// payload worth keeping, so all copies give this one.
inline double canonical_nan(double v) {
  return v != v ? __builtin_bit_cast(double, uint64_t(0x7ff8000000000000u)) : v;
}
inline void canonical_nan(Moments& m) { m.mean = canonical_nan(m.mean), m.m2 = canonical_nan(m.m2); }
inline void canonical_nan(Sums& s) { s.g = canonical_nan(s.g), s.gx = canonical_nan(s.gx); }
inline void merge_into(Sums& a, const Sums& b) {
  a.g += b.g;
  a.gx += b.gx;
}

}  // namespace bnorm
