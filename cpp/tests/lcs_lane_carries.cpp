// Checks, on the CPU, the warp-parallel column step the CUDA kernel uses (one word per lane,
// carries resolved by lcs::resolve_carries across 32-word chunks) against the serial
// lcs::column_step, on random and adversarial (long carry chains) bit vectors.
// Built and run by tests/test_lcs_native.py; exits non-zero on the first mismatch.
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "drift/lcs.hpp"

using namespace drift;

static void lane_step(const std::vector<uint64_t>& v, std::vector<uint64_t>& out, const std::vector<uint64_t>& pm) {
  const int64_t words = static_cast<int64_t>(v.size());
  uint32_t carry = 0;
  for (int64_t base = 0; base < words; base += 32) {
    uint64_t sums[32];
    uint32_t gen = 0, prop = 0;
    for (int lane = 0; lane < 32; ++lane) {
      const int64_t w = base + lane;
      if (w >= words) continue;
      uint64_t own = 0;
      sums[lane] = lcs::add_carry(v[w], v[w] & pm[w], 0, &own);
      gen |= static_cast<uint32_t>(own) << lane;
      prop |= static_cast<uint32_t>(sums[lane] == ~uint64_t(0)) << lane;
    }
    uint32_t chunk_out = 0;
    const uint32_t carries = lcs::resolve_carries(gen, prop, carry, &chunk_out);
    carry = chunk_out;
    for (int lane = 0; lane < 32; ++lane) {
      const int64_t w = base + lane;
      if (w < words) out[w] = lcs::combine(sums[lane] + ((carries >> lane) & 1u), v[w], pm[w]);
    }
  }
}

int main() {
  std::mt19937_64 rng(42);
  int failures = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int64_t words = 1 + static_cast<int64_t>(rng() % 130);
    std::vector<uint64_t> v(words), pm(words), a(words), b(words);
    const int kind = static_cast<int>(rng() % 4);
    for (int64_t w = 0; w < words; ++w) {
      switch (kind) {
        case 0: v[w] = rng(); pm[w] = rng(); break;
        case 1: v[w] = ~uint64_t(0); pm[w] = (w == 0) ? 1 : 0; break;            // carry through every word
        case 2: v[w] = ~uint64_t(0); pm[w] = rng() & rng() & rng(); break;       // sparse matches
        default: v[w] = (rng() % 3) ? ~uint64_t(0) : rng(); pm[w] = (rng() % 2) ? ~uint64_t(0) : rng(); break;
      }
    }
    lcs::column_step(v.data(), a.data(), pm.data(), words);
    lane_step(v, b, pm);
    if (a != b) {
      if (++failures < 5) std::printf("mismatch: trial %d, words %lld, kind %d\n", trial, (long long)words, kind);
    }
  }
  std::printf("%d mismatches\n", failures);
  return failures == 0 ? 0 : 1;
}
