// Per-export-server counters of 9P requests: how many of each message type and how long the server took to
// answer them (arrival of the T-message to its reply being queued), for "where does the time go" questions
// (make bench) and the shim's optional stats file. Two typed arrays indexed by message type: no allocation
// per request.
import { MsgType } from './messages.js';

const NAMES: string[] = [];
for (const [name, n] of Object.entries(MsgType)) NAMES[n] = name;

export interface OpStat {
  count: number;
  /** Total server time for these requests, microseconds. */
  micros: number;
}

export class OpStats {
  private readonly counts = new Float64Array(256);
  private readonly micros = new Float64Array(256);

  record(type: number, ms: number): void {
    this.counts[type & 0xff]! += 1;
    this.micros[type & 0xff]! += ms * 1000;
  }

  /** Non-zero entries by T-message name (Twalk, Tlopen...). */
  snapshot(): Record<string, OpStat> {
    const out: Record<string, OpStat> = {};
    for (let t = 0; t < 256; t++)
      if (this.counts[t]! > 0)
        out[NAMES[t] ?? `type${t}`] = { count: this.counts[t]!, micros: Math.round(this.micros[t]!) };
    return out;
  }
}
