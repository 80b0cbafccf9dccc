// Process settings for a file server on the event loop (the shim and `lcowctl 9p serve`), applied once at start.
//
//  - glibc malloc: Node allocates a 64 KiB buffer for every socket read and a buffer per large 9P message, all
//    freed soon after. With glibc's defaults the heap top is trimmed (brk down) as soon as 128 KiB are free and
//    allocations of 128 KiB or more are mmapped, so the next allocation page-faults fresh zeroed pages in again:
//    measured ~20% of the 9P server's CPU on 64 KiB writes. Keeping up to 64 MiB of free heap and serving up to
//    4 MiB from the heap removes that churn (memory stays reserved, not leaked: it is reused).
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
  } catch {
    // not glibc (musl has no mallopt): defaults
  }
}
