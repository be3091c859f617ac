// CPU batch driver for drift::lcs: one pair per task on a thread pool, each thread with its
// own scratch (match table, hash index, column history), reused across the pairs it takes.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "drift/lcs.hpp"
#include "drivers.hpp"
#include "validate.hpp"
#include "cpu/parallel.hpp"

namespace drift {

namespace {

// Per-thread scratch: a token -> match-table row lookup (a direct table for small ids, else an
// open-addressing map with key and row side by side, one cache line per probe), the match
// table (one ceil(M/64)-word bit vector per token that y and y' share), the match-table row
// of every token of y and y', and the column history (only columns whose token occurs in y
// are stored; `cols[j]` points at V_{j+1}).
//
// Memory per pair in flight (the bound lcs_mask documents): 8 * ceil(M/64) bytes per stored
// column (at most N) and per shared token (at most min(M, N)), plus O(M + N) for the row
// indices and the map; the direct table is used only when it is no larger than
// kDenseEntriesPerToken entries per token of the batch (lcs_batch), so no term grows with the
// vocabulary or with tokens of one side alone.
constexpr int64_t kDenseEntriesPerToken = 64;
constexpr int32_t kAbsent = -1;   // lookup: token not seen
constexpr int32_t kInB = -2;      // lookup: token of y', not (yet) of y; rows: no match row
struct Slot {
  int64_t key;
  int32_t row;
};
struct Scratch {
  std::vector<int32_t> dense;  // token -> row when ids are small (all kAbsent between pairs)
  std::vector<Slot> slots;
  std::vector<int32_t> a_rows, b_rows;
  std::vector<uint64_t> pm;
  std::vector<uint64_t> history;
  std::vector<const uint64_t*> cols;
  std::vector<uint64_t> ones;
};

inline uint64_t hash_token(int64_t t) { return static_cast<uint64_t>(t) * 0x9E3779B97F4A7C15ull; }

// The traceback (lcs::traceback, the code the CUDA kernel walks too) over this driver's
// storage: column j's V vector (s.cols[j-1], unchanged columns shared) and the match row of
// b[j-1] (none when a lacks that token): F = V & ~PM, and a match is a PM bit.
template <typename Mask>
int64_t traceback_runs(const Scratch& s, int64_t words, int64_t m, int64_t n, Mask* diff_a, Mask* diff_b) {
  auto pm_row = [&](int64_t col) -> const uint64_t* {
    const int32_t r = s.b_rows[col - 1];
    return r >= 0 ? s.pm.data() + static_cast<size_t>(r) * words : nullptr;
  };
  auto flat_word = [&](int64_t col, int64_t w) {
    const uint64_t* pm = pm_row(col);
    return s.cols[col - 1][w] & ~(pm ? pm[w] : 0);
  };
  auto match = [&](int64_t i, int64_t col) {
    const uint64_t* pm = pm_row(col);
    return pm != nullptr && ((pm[(i - 1) / lcs::kWordBits] >> ((i - 1) % lcs::kWordBits)) & 1u);
  };
  return lcs::traceback(flat_word, match, m, n, diff_a, diff_b);
}

// Gives every token of a that also occurs in b a match-table row (0, 1, ... in order of first
// occurrence in a): a_rows[i] / b_rows[j] = that row, or a negative value for a token the
// other side lacks. `lookup(t)` returns a reference to t's entry, kAbsent when new.
template <typename TA, typename TB, typename Lookup>
int32_t assign_shared_rows(const TA* a, int64_t m, const TB* b, int64_t n, Scratch& s, Lookup&& lookup) {
  for (int64_t j = 0; j < n; ++j) {
    int32_t& r = lookup(static_cast<int64_t>(b[j]));
    if (r == kAbsent) r = kInB;
  }
  s.a_rows.resize(m);
  int32_t shared = 0;
  for (int64_t i = 0; i < m; ++i) {
    int32_t& r = lookup(static_cast<int64_t>(a[i]));
    if (r == kInB) r = shared++;
    s.a_rows[i] = r;  // kAbsent: a token only y has (the lookup entry stays kAbsent)
  }
  s.b_rows.resize(n);
  for (int64_t j = 0; j < n; ++j) s.b_rows[j] = lookup(static_cast<int64_t>(b[j]));  // kInB: only y' has it
  return shared;
}

// PM[row] for the shared tokens: bit i of row a_rows[i].
void fill_match_table(Scratch& s, int32_t shared, int64_t m, int64_t words) {
  s.pm.assign(static_cast<size_t>(shared) * words, 0);
  for (int64_t i = 0; i < m; ++i)
    if (s.a_rows[i] >= 0)
      s.pm[static_cast<size_t>(s.a_rows[i]) * words + i / lcs::kWordBits] |= uint64_t(1) << (i % lcs::kWordBits);
}

template <typename TA, typename TB>
int64_t lcs_pair(const TA* a, int64_t m, const TB* b, int64_t n, uint8_t* diff_a, uint8_t* diff_b, Scratch& s,
                 int64_t max_id) {
  std::fill(diff_a, diff_a + m, uint8_t(1));
  std::fill(diff_b, diff_b + n, uint8_t(1));
  if (m == 0 || n == 0) return 0;
  const int64_t words = lcs::num_words(m);

  int32_t shared = 0;
  if (max_id >= 0) {
    // Small ids: a direct token -> row table (no probing, no unpredictable branches); only
    // the entries of the pair's tokens are touched, and reset to kAbsent before returning.
    if (static_cast<int64_t>(s.dense.size()) <= max_id) s.dense.assign(max_id + 1, kAbsent);
    int32_t* dense = s.dense.data();
    shared = assign_shared_rows(a, m, b, n, s, [dense](int64_t t) -> int32_t& { return dense[t]; });
    for (int64_t j = 0; j < n; ++j) dense[static_cast<int64_t>(b[j])] = kAbsent;
    for (int64_t i = 0; i < m; ++i) dense[static_cast<int64_t>(a[i])] = kAbsent;
  } else {
    int shift_bits = 1;
    while ((int64_t(1) << shift_bits) < 2 * n) ++shift_bits;  // only y' tokens stay in the map
    const uint64_t capacity = uint64_t(1) << shift_bits;
    const int shift = 64 - shift_bits;
    s.slots.assign(capacity, Slot{0, kAbsent});
    Slot* slots = s.slots.data();
    auto lookup = [slots, shift, capacity](int64_t t) -> int32_t& {
      uint64_t h = hash_token(t) >> shift;
      while (slots[h].row != kAbsent && slots[h].key != t) h = (h + 1) & (capacity - 1);
      slots[h].key = t;  // claims an empty slot; a no-op on a hit
      return slots[h].row;
    };
    shared = assign_shared_rows(a, m, b, n, s, lookup);
  }
  fill_match_table(s, shared, m, words);

  s.history.resize(static_cast<size_t>(n) * words);
  s.cols.resize(n);
  s.ones.assign(words, ~uint64_t(0));
  const uint64_t* prev = s.ones.data();
  uint64_t* next = s.history.data();
  for (int64_t j = 0; j < n; ++j) {
    const int32_t r = s.b_rows[j];
    if (r >= 0) {  // a token absent from y leaves V unchanged: reuse the previous column
      lcs::column_step(prev, next, s.pm.data() + static_cast<size_t>(r) * words, words);
      prev = next;
      next += words;
    }
    s.cols[j] = prev;
  }
  return traceback_runs(s, words, m, n, diff_a, diff_b);
}

template <typename TA, typename TB>
void lcs_batch(const LcsArgs& args) {
  const int64_t B = args.y.shape[0], M = args.y.shape[1], N = args.y_prime.shape[1];
  const TA* y = args.y.ptr<TA>();
  const TB* yp = args.y_prime.ptr<TB>();
  const int64_t* y_len = args.y_len.ptr<int64_t>();
  const int64_t* yp_len = args.y_prime_len.ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (y_len[b] < 0 || y_len[b] > M)
      fail("y_lengths: entry " + std::to_string(b) + " is " + std::to_string(y_len[b]) + ", expected 0.." + std::to_string(M));
    if (yp_len[b] < 0 || yp_len[b] > N)
      fail("y_prime_lengths: entry " + std::to_string(b) + " is " + std::to_string(yp_len[b]) + ", expected 0.." + std::to_string(N));
  }
  // Token ids are hashed, never used as indices, but a negative id inside the lengths is
  // almost always undeclared padding (-100): refuse it like the Python layer does on CUDA.
  int64_t max_id = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < y_len[b]; ++i)
      max_id = std::max<int64_t>(max_id, static_cast<int64_t>(y[b * M + i]));
    for (int64_t j = 0; j < yp_len[b]; ++j)
      max_id = std::max<int64_t>(max_id, static_cast<int64_t>(yp[b * N + j]));
    for (int64_t i = 0; i < y_len[b]; ++i)
      if (static_cast<int64_t>(y[b * M + i]) < 0)
        fail("y: negative token ids inside the valid lengths; pass pad_id or lengths to mark padding");
    for (int64_t j = 0; j < yp_len[b]; ++j)
      if (static_cast<int64_t>(yp[b * N + j]) < 0)
        fail("y_prime: negative token ids inside the valid lengths; pass pad_id or lengths to mark padding");
  }
  // Direct token tables up to 2^22 ids (16 MiB per thread), and only while the table has at
  // most kDenseEntriesPerToken entries per token of the batch (the memory bound); larger ids
  // use the hash map.
  if (max_id >= (int64_t(1) << 22) || max_id + 1 > kDenseEntriesPerToken * std::max<int64_t>(1, B * (M + N)))
    max_id = -1;
  uint8_t* mask_y = args.mask_y.ptr<uint8_t>();
  uint8_t* mask_yp = args.mask_y_prime.ptr<uint8_t>();
  int64_t* out = args.lcs_len.ptr<int64_t>();
  const int threads = threads_for(B, get_num_threads());
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  parallel_for(B, threads, [&](int tid, int64_t b) {
    uint8_t* ma = mask_y + b * M;
    uint8_t* mb = mask_yp + b * N;
    std::fill(ma + y_len[b], ma + M, uint8_t(0));
    std::fill(mb + yp_len[b], mb + N, uint8_t(0));
    out[b] = lcs_pair(y + b * M, y_len[b], yp + b * N, yp_len[b], ma, mb, scratch[tid], max_id);
  });
}

}  // namespace

void lcs_cpu(const LcsArgs& args) {
  validate(args, DeviceKind::kCPU);
  const bool a64 = args.y.dtype == DType::kInt64, b64 = args.y_prime.dtype == DType::kInt64;
  if (a64 && b64) lcs_batch<int64_t, int64_t>(args);
  else if (a64) lcs_batch<int64_t, int32_t>(args);
  else if (b64) lcs_batch<int32_t, int64_t>(args);
  else lcs_batch<int32_t, int32_t>(args);
}

}  // namespace drift
