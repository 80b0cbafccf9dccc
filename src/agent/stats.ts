// runc stats JSON -> containerd/cgroups Metrics (v1 or v2), packed as an Any with the bare type name that
// containerd and CRI expect (`io.containerd.cgroups.v1.Metrics`).
import { existsSync } from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import { AnySchema, type Any } from '@bufbuild/protobuf/wkt';
import * as v1 from '../gen/cgroups/v1/metrics_pb.js';
import * as v2 from '../gen/cgroups/v2/metrics_pb.js';
import type { RuncMemEntry, RuncStats } from './runc.js';

export const METRICS_V1_TYPE = 'io.containerd.cgroups.v1.Metrics';
export const METRICS_V2_TYPE = 'io.containerd.cgroups.v2.Metrics';

/** 2 when /sys/fs/cgroup is the unified hierarchy, else 1. */
export function cgroupVersion(root = '/sys/fs/cgroup'): 1 | 2 {
  return existsSync(`${root}/cgroup.controllers`) ? 2 : 1;
}

const U64_MAX = (1n << 64n) - 1n;
// runc prints "no limit" as 18446744073709551615, which JSON.parse rounds up to 2^64: clamp to uint64.
const u = (n: number | undefined): bigint => {
  const b = BigInt(Math.max(0, Math.trunc(n ?? 0)));
  return b > U64_MAX ? U64_MAX : b;
};

function memEntry(e: RuncMemEntry | undefined): v1.MemoryEntry | undefined {
  if (!e) return undefined;
  return create(v1.MemoryEntrySchema, { limit: u(e.limit), usage: u(e.usage), max: u(e.max), failcnt: u(e.failcnt) });
}

export function toV1Metrics(s: RuncStats): v1.Metrics {
  const raw = s.memory?.raw ?? {};
  const r = (k: string): bigint => u(raw[k]);
  const blk = (k: string): v1.BlkIOEntry[] =>
    (s.blkio?.[k] ?? []).map((e) =>
      create(v1.BlkIOEntrySchema, { op: e.op ?? '', major: u(e.major), minor: u(e.minor), value: u(e.value) }),
    );
  return create(v1.MetricsSchema, {
    pids: create(v1.PidsStatSchema, { current: u(s.pids?.current), limit: u(s.pids?.limit) }),
    cpu: create(v1.CPUStatSchema, {
      usage: create(v1.CPUUsageSchema, {
        total: u(s.cpu?.usage?.total),
        kernel: u(s.cpu?.usage?.kernel),
        user: u(s.cpu?.usage?.user),
        perCpu: (s.cpu?.usage?.percpu ?? []).map(u),
      }),
      throttling: create(v1.ThrottleSchema, {
        periods: u(s.cpu?.throttling?.periods),
        throttledPeriods: u(s.cpu?.throttling?.throttledPeriods),
        throttledTime: u(s.cpu?.throttling?.throttledTime),
      }),
    }),
    memory: create(v1.MemoryStatSchema, {
      cache: u(s.memory?.cache ?? raw.cache),
      rss: r('rss'),
      rssHuge: r('rss_huge'),
      mappedFile: r('mapped_file'),
      dirty: r('dirty'),
      writeback: r('writeback'),
      pgPgIn: r('pgpgin'),
      pgPgOut: r('pgpgout'),
      pgFault: r('pgfault'),
      pgMajFault: r('pgmajfault'),
      inactiveAnon: r('inactive_anon'),
      activeAnon: r('active_anon'),
      inactiveFile: r('inactive_file'),
      activeFile: r('active_file'),
      unevictable: r('unevictable'),
      hierarchicalMemoryLimit: r('hierarchical_memory_limit'),
      hierarchicalSwapLimit: r('hierarchical_memsw_limit'),
      totalCache: r('total_cache'),
      totalRss: r('total_rss'),
      totalRssHuge: r('total_rss_huge'),
      totalMappedFile: r('total_mapped_file'),
      totalDirty: r('total_dirty'),
      totalWriteback: r('total_writeback'),
      totalPgPgIn: r('total_pgpgin'),
      totalPgPgOut: r('total_pgpgout'),
      totalPgFault: r('total_pgfault'),
      totalPgMajFault: r('total_pgmajfault'),
      totalInactiveAnon: r('total_inactive_anon'),
      totalActiveAnon: r('total_active_anon'),
      totalInactiveFile: r('total_inactive_file'),
      totalActiveFile: r('total_active_file'),
      totalUnevictable: r('total_unevictable'),
      usage: memEntry(s.memory?.usage),
      swap: memEntry(s.memory?.swap),
      kernel: memEntry(s.memory?.kernel),
      kernelTcp: memEntry(s.memory?.kernelTCP),
    }),
    blkio: create(v1.BlkIOStatSchema, {
      ioServiceBytesRecursive: blk('ioServiceBytesRecursive'),
      ioServicedRecursive: blk('ioServicedRecursive'),
      ioQueuedRecursive: blk('ioQueueRecursive'),
      ioServiceTimeRecursive: blk('ioServiceTimeRecursive'),
      ioWaitTimeRecursive: blk('ioWaitTimeRecursive'),
      ioMergedRecursive: blk('ioMergedRecursive'),
      ioTimeRecursive: blk('ioTimeRecursive'),
      sectorsRecursive: blk('sectorsRecursive'),
    }),
    hugetlb: Object.entries(s.hugetlb ?? {}).map(([pagesize, h]) =>
      create(v1.HugetlbStatSchema, { pagesize, usage: u(h.usage), max: u(h.max), failcnt: u(h.failcnt) }),
    ),
  });
}

export function toV2Metrics(s: RuncStats): v2.Metrics {
  const raw = s.memory?.raw ?? {};
  const r = (k: string): bigint => u(raw[k]);
  const ns2us = (n: number | undefined): bigint => u((n ?? 0) / 1000);
  return create(v2.MetricsSchema, {
    pids: create(v2.PidsStatSchema, { current: u(s.pids?.current), limit: u(s.pids?.limit) }),
    cpu: create(v2.CPUStatSchema, {
      usageUsec: ns2us(s.cpu?.usage?.total),
      userUsec: ns2us(s.cpu?.usage?.user),
      systemUsec: ns2us(s.cpu?.usage?.kernel),
      nrPeriods: u(s.cpu?.throttling?.periods),
      nrThrottled: u(s.cpu?.throttling?.throttledPeriods),
      throttledUsec: ns2us(s.cpu?.throttling?.throttledTime),
    }),
    memory: create(v2.MemoryStatSchema, {
      anon: r('anon'),
      file: r('file'),
      kernelStack: r('kernel_stack'),
      slab: r('slab'),
      sock: r('sock'),
      shmem: r('shmem'),
      fileMapped: r('file_mapped'),
      fileDirty: r('file_dirty'),
      fileWriteback: r('file_writeback'),
      anonThp: r('anon_thp'),
      inactiveAnon: r('inactive_anon'),
      activeAnon: r('active_anon'),
      inactiveFile: r('inactive_file'),
      activeFile: r('active_file'),
      unevictable: r('unevictable'),
      slabReclaimable: r('slab_reclaimable'),
      slabUnreclaimable: r('slab_unreclaimable'),
      pgfault: r('pgfault'),
      pgmajfault: r('pgmajfault'),
      usage: u(s.memory?.usage?.usage),
      usageLimit: u(s.memory?.usage?.limit),
      swapUsage: u(s.memory?.swap?.usage),
      swapLimit: u(s.memory?.swap?.limit),
      maxUsage: u(s.memory?.usage?.max),
      swapMaxUsage: u(s.memory?.swap?.max),
    }),
    hugetlb: Object.entries(s.hugetlb ?? {}).map(([pagesize, h]) =>
      create(v2.HugeTlbStatSchema, { pagesize, current: u(h.usage), max: u(h.max) }),
    ),
  });
}

/** An Any whose type_url is the bare full name (containerd 1.6 resolves it with gogo's registry). */
export function bareAny(typeName: string, value: Uint8Array): Any {
  return create(AnySchema, { typeUrl: typeName, value });
}

export function metricsAny(stats: RuncStats, version: 1 | 2): Any {
  return version === 2
    ? bareAny(METRICS_V2_TYPE, toBinary(v2.MetricsSchema, toV2Metrics(stats)))
    : bareAny(METRICS_V1_TYPE, toBinary(v1.MetricsSchema, toV1Metrics(stats)));
}
