// Process settings for a file server on the event loop (the shim and `lcowctl 9p serve`), applied once at start.
//
//  - glibc malloc: Node allocates a 64 KiB buffer for every socket read and a buffer per large 9P message, all
//    freed soon after. With glibc's defaults the heap top is trimmed (brk down) as soon as 128 KiB are free and
//    allocations of 128 KiB or more are mmapped, so the next allocation page-faults fresh zeroed pages in again:
//    measured ~20% of the 9P server's CPU on 64 KiB writes. Keeping up to 64 MiB of free heap and serving up to
//    4 MiB from the heap removes that churn (memory stays reserved, not leaked: it is reused). The price is memory
//    an idle shim keeps (it grew by ~45 KiB per container over 200 containers in one pod); so once the process
//    has been idle for a check period (under 2% of a core), the free heap goes back to the system (malloc_trim),
//    once per idle period.
// The other setting, 16 libuv threadpool threads instead of 4 (uncached reads, large writes, fsync and truncation
// of every 9P connection share them with DNS and crypto: four blocked reads would stall everything else), is
// UV_THREADPOOL_SIZE in the launchers `make build` writes: Node's ESM loader starts the pool before any module
// code runs, so setting it here would be too late.
import koffi from 'koffi';

const M_TRIM_THRESHOLD = -1;
const M_TOP_PAD = -2;
const M_MMAP_THRESHOLD = -3;

let applied = false;

export function tuneProcessForFileServing(): void {
  if (applied) return;
  applied = true;
  if (process.platform !== 'linux') return;
  try {
    const mallopt = koffi.load('libc.so.6').func('int mallopt(int, int)');
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TOP_PAD, 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    const mallocTrim = koffi.load('libc.so.6').func('int malloc_trim(size_t)');
    trimWhenIdle(() => void mallocTrim(0));
  } catch {
    // not glibc (musl has no mallopt): defaults
  }
}

/** How often the idle check runs, and the share of one core under which the process counts as idle. */
const IDLE_CHECK_MS = 10_000;
const IDLE_CPU_SHARE = 0.02;

/**
 * Calls `trim` once whenever a check period passed with the process (all its threads) under IDLE_CPU_SHARE of a
 * core, then not again until it was busy. The timer never keeps the process alive. Cost: one cpuUsage() per
 * period; a trim walks glibc's free lists (a few ms for tens of MiB).
 */
export function trimWhenIdle(trim: () => void, periodMs = IDLE_CHECK_MS): NodeJS.Timeout {
  let last = process.cpuUsage();
  let trimmed = false;
  const timer = setInterval(() => {
    const now = process.cpuUsage();
    const usedMs = (now.user - last.user + now.system - last.system) / 1000;
    last = now;
    if (usedMs > periodMs * IDLE_CPU_SHARE) trimmed = false;
    else if (!trimmed) {
      trimmed = true;
      trim();
    }
  }, periodMs);
  timer.unref();
  return timer;
}
