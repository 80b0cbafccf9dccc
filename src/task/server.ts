// ttrpc binding of the Task service: containerd.task.v2.Task (and v3, same messages). Errors are mapped in
// one place (toTtrpcError) through the server's errorMapper.
import { Task as TaskV2 } from '../gen/containerd/task/v2/shim_pb.js';
import { Task as TaskV3 } from '../gen/containerd/task/v3/shim_pb.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SpanContext } from '@opentelemetry/api';
import {
  traceContextFromAnnotations,
  traceServiceImpl,
  tracingEnabled,
  type RpcSpanOptions,
} from '../telemetry/index.js';
import { TtrpcServer } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { toTtrpcError } from './errors.js';
import type { TaskService } from './service.js';

export function createTaskServer(svc: TaskService, logger: Logger): TtrpcServer {
  const server = new TtrpcServer({ logger, errorMapper: toTtrpcError });
  const impl = {
    state: async (r: Parameters<TaskService['state']>[0]) => svc.state(r),
    create: (r: Parameters<TaskService['create']>[0]) => svc.create(r),
    start: (r: Parameters<TaskService['start']>[0]) => svc.start(r),
    delete: (r: Parameters<TaskService['delete']>[0]) => svc.delete(r),
    pids: (r: Parameters<TaskService['pids']>[0]) => svc.pids(r),
    pause: async (r: Parameters<TaskService['pause']>[0]) => (await svc.pause(r), {}),
    resume: async (r: Parameters<TaskService['resume']>[0]) => (await svc.resume(r), {}),
    checkpoint: async () => svc.checkpoint(),
    kill: async (r: Parameters<TaskService['kill']>[0]) => (await svc.kill(r), {}),
    exec: async (r: Parameters<TaskService['exec']>[0]) => (await svc.exec(r), {}),
    resizePty: async (r: Parameters<TaskService['resizePty']>[0]) => (await svc.resizePty(r), {}),
    closeIO: async (r: Parameters<TaskService['closeIO']>[0]) => (await svc.closeIO(r), {}),
    update: async (r: Parameters<TaskService['update']>[0]) => (await svc.update(r), {}),
    wait: (r: Parameters<TaskService['wait']>[0]) => svc.wait(r),
    stats: (r: Parameters<TaskService['stats']>[0]) => svc.stats(r),
    connect: async (r: Parameters<TaskService['connect']>[0]) => svc.connect(r),
    shutdown: async (r: Parameters<TaskService['shutdown']>[0]) => (svc.shutdown(r), {}),
  };
  // Every Task RPC is a span when tracing is on (decided once, here: free when off).
  const served = tracingEnabled() ? traceServiceImpl(impl, containerTraceParents()) : impl;
  server.registerService(TaskV2, served);
  server.registerService(TaskV3, served);
  return server;
}

/**
 * containerd 1.6 sends no trace context to shims: a container's spec may carry one in its annotations
 * (lcow.traceparent, lcow.tracestate; `ctr run --annotation`, or a pod annotation through CRI). Create reads it
 * from the bundle's config.json and every later RPC on that container without one of its own continues it, so
 * one `ctr run` is one trace. Bounded; forgotten at the container's Delete.
 */
function containerTraceParents(): RpcSpanOptions {
  const byContainer = new Map<string, SpanContext>();
  return {
    fallbackParent: async (info, args) => {
      const req = args[0] as { id?: unknown; bundle?: unknown; execId?: unknown } | undefined;
      const id = typeof req?.id === 'string' ? req.id : '';
      if (!id) return undefined;
      if (info.method === 'Create' && typeof req?.bundle === 'string') {
        let sc: SpanContext | undefined;
        try {
          const text = await readFile(join(req.bundle, 'config.json'), 'utf8');
          if (text.length <= 16 << 20)
            sc = traceContextFromAnnotations(
              (JSON.parse(text) as { annotations?: Record<string, unknown> }).annotations,
            );
        } catch {
          sc = undefined; // Create itself reports a bad bundle
        }
        if (!sc) return undefined;
        if (byContainer.size >= 1024) byContainer.delete(byContainer.keys().next().value!);
        byContainer.set(id, sc);
        return sc;
      }
      const sc = byContainer.get(id);
      if (info.method === 'Delete' && !req?.execId) byContainer.delete(id);
      return sc;
    },
  };
}
