// ttrpc binding of the Task service: containerd.task.v2.Task (and v3, same messages). Errors are mapped in
// one place (toTtrpcError) through the server's errorMapper.
import { Task as TaskV2 } from '../gen/containerd/task/v2/shim_pb.js';
import { Task as TaskV3 } from '../gen/containerd/task/v3/shim_pb.js';
import { traceServiceImpl, tracingEnabled } from '../telemetry/index.js';
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
  const served = tracingEnabled() ? traceServiceImpl(impl) : impl;
  server.registerService(TaskV2, served);
  server.registerService(TaskV3, served);
  return server;
}
