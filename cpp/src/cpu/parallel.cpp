// The process-wide CPU thread count used by every batch driver.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "drivers.hpp"

namespace drift {

namespace {
std::atomic<int> g_num_threads{0};
}

int get_num_threads() {
  const int n = g_num_threads.load();
  if (n > 0) return n;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(std::min<unsigned>(hw, kMaxThreads));
}

void set_num_threads(int64_t n) {
  if (n < 0) throw std::invalid_argument("num_threads: expected >= 0 (0 = all cores), got " + std::to_string(n));
  g_num_threads.store(static_cast<int>(std::min<int64_t>(n, kMaxThreads)));
}

}  // namespace drift
