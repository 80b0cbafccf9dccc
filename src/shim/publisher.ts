// Event publisher: containerd.services.events.ttrpc.v1.Events/Forward at TTRPC_ADDRESS, with the bare type
// name as the Any type_url, the namespace in ttrpc metadata, a bounded queue (2048), per-event retries and
// reconnects (containerd may be restarting).
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { ForwardRequestSchema } from '../gen/containerd/services/events/ttrpc/v1/events_pb.js';
import { NAMESPACE_KEY, TtrpcClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import type { EventPublisher } from '../task/service.js';

const QUEUE_MAX = 2048;
const MAX_ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 5000;

interface Item {
  topic: string;
  payload: Uint8Array;
  attempts: number;
}

export class TtrpcEventPublisher implements EventPublisher {
  private readonly queue: Item[] = [];
  private client: TtrpcClient | undefined;
  private running = false;
  private closed = false;
  private idle: Array<() => void> = [];

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: Logger,
  ) {}

  publish(topic: string, typeName: string, value: Uint8Array): void {
    if (this.closed) return;
    if (!this.address) return;
    if (this.queue.length >= QUEUE_MAX) {
      this.log.warn('event queue full, dropping event', { topic });
      return;
    }
    const req = create(ForwardRequestSchema, {
      envelope: {
        timestamp: timestampNow(),
        namespace: this.namespace,
        topic,
        event: { typeUrl: typeName, value },
      },
    });
    this.queue.push({ topic, payload: toBinary(ForwardRequestSchema, req), attempts: 0 });
    if (!this.running) void this.run();
  }

  private async connect(): Promise<TtrpcClient> {
    if (this.client && !this.client.closed) return this.client;
    const path = this.address.replace(/^unix:\/\//, '');
    this.client = await TtrpcClient.connect(path);
    return this.client;
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const item = this.queue[0]!;
      try {
        const c = await this.connect();
        await c.call('containerd.services.events.ttrpc.v1.Events', 'Forward', item.payload, {
          metadata: { [NAMESPACE_KEY]: this.namespace },
          timeoutMs: CALL_TIMEOUT_MS,
        });
        this.queue.shift();
      } catch (err) {
        item.attempts++;
        this.client?.close();
        this.client = undefined;
        if (item.attempts >= MAX_ATTEMPTS) {
          this.log.error('dropping event after retries', { topic: item.topic, error: err });
          this.queue.shift();
        } else {
          await new Promise((r) => setTimeout(r, 200 * item.attempts));
        }
      }
    }
    this.running = false;
    for (const r of this.idle.splice(0)) r();
  }

  /** Resolves when every queued event was sent (or dropped). */
  async flush(timeoutMs = 5000): Promise<void> {
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    try {
      await Promise.race([new Promise<void>((r) => this.idle.push(r)), timedOut]);
    } finally {
      // A pending timer would keep the shim alive for up to timeoutMs after its last event went out.
      clearTimeout(timer);
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
  }
}
