// Test fixture: a temp export served by an in-process P9Server on loopback TCP, plus connected clients.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { P9Server, type ExportConfig, type P9ServerOptions } from '../../../src/p9/server.js';
import { P9Client } from '../../helpers/p9client.js';

export class Fixture {
  readonly clients: P9Client[] = [];
  private constructor(
    readonly dir: string,
    readonly server: P9Server,
    readonly listener: net.Server,
    readonly port: number,
  ) {}

  /** `exportsFor` builds the export list from the temp dir; by default one export named "test". */
  static async start(
    opts: Partial<Omit<P9ServerOptions, 'exports'>> & {
      readOnly?: boolean;
      exportsFor?: (dir: string) => ExportConfig[];
    } = {},
  ): Promise<Fixture> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9test-'));
    const { exportsFor, readOnly, ...limits } = opts;
    const server = new P9Server({
      exports: exportsFor?.(dir) ?? [{ name: 'test', path: dir, readOnly: readOnly ?? false }],
      ...limits,
    });
    const listener = net.createServer((sock) => server.handleConnection(sock));
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    return new Fixture(dir, server, listener, (listener.address() as net.AddressInfo).port);
  }

  /** A client after Tversion (and Tattach to the export unless attach=false). */
  async client(msize = 65536, attach = true): Promise<{ c: P9Client; root: number }> {
    const c = await P9Client.connect(this.port);
    this.clients.push(c);
    await c.version(msize);
    const root = attach ? (await c.attach('test')).fid : -1;
    return { c, root };
  }

  file(rel: string, content: string | Buffer = ''): string {
    const p = path.join(this.dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    return p;
  }

  host(rel: string): string {
    return path.join(this.dir, rel);
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await new Promise((r) => setTimeout(r, 20));
    this.server.close();
    await new Promise((r) => this.listener.close(r));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until `cond` holds (server-side effects of a closed client). */
export async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}
