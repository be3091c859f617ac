// A minimal fork-join pool for the CPU batch drivers: items are claimed from an atomic
// counter so uneven pairs (different lengths) balance across threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace drift {

// Threads a driver uses for `n` items under a limit of `max_threads`: never more threads than
// items, never fewer than one.
inline int threads_for(int64_t n, int max_threads) {
  return static_cast<int>(std::min<int64_t>(std::max(1, max_threads), std::max<int64_t>(n, 1)));
}

// Runs body(thread_index, item) for item in [0, n) on up to threads_for(n, max_threads)
// threads (thread_index below that). The first exception thrown by a worker is rethrown here.
// A thread that cannot be created (no memory for its stack, a process limit) is not an
// error: the threads already running, and the calling thread, take all the items.
template <typename Body>
void parallel_for(int64_t n, int max_threads, Body&& body) {
  const int threads = threads_for(n, max_threads);
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int tid) {
    try {
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) body(tid, i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  if (threads <= 1) {
    worker(0);
  } else {
    std::vector<std::thread> pool;
    try {
      pool.reserve(threads - 1);
      for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
    } catch (...) {
      // std::system_error (thread creation) or std::bad_alloc: go on with the pool so far.
      // Every started thread is joined below; a joinable std::thread must never be destroyed.
    }
    worker(0);
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace drift
