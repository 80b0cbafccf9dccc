// A client of the CRI streaming server (the URL that Exec/Attach return): the Kubernetes remotecommand protocol
// over a websocket, subprotocol v4.channel.k8s.io. Each binary message starts with a channel byte: 0 stdin,
// 1 stdout, 2 stderr, 3 error (v4: a JSON metav1.Status at the end, with the exit code in its details for a
// non-zero exit), 4 resize (JSON {"Width","Height"}). v4 has no way to close stdin: scripts read what they need.
import WebSocket from 'ws';

export interface StreamResult {
  stdout: string;
  stderr: string;
  /** From the v4 status: 0 on Success, else the ExitCode cause (or -1 when the status has none). */
  exitCode: number;
  status: { status?: string; message?: string; reason?: string } | undefined;
}

export interface StreamSession {
  /** Everything received so far on stdout / stderr. */
  readonly stdout: () => string;
  readonly stderr: () => string;
  send(data: string | Buffer): void;
  resize(width: number, height: number): void;
  /** Resolves once `re` matches stdout (or rejects after timeoutMs). */
  waitOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves when the server closed the stream. */
  readonly done: Promise<StreamResult>;
  close(): void;
}

const CH_STDIN = 0;
const CH_STDOUT = 1;
const CH_STDERR = 2;
const CH_ERROR = 3;
const CH_RESIZE = 4;

export function openStream(url: string, timeoutMs = 120_000): Promise<StreamSession> {
  const wsUrl = url.replace(/^http/, 'ws');
  const ws = new WebSocket(wsUrl, ['v4.channel.k8s.io'], { handshakeTimeout: timeoutMs });
  let out = '';
  let err = '';
  let errorChannel = '';
  let ended = false;
  const waiters = new Set<() => void>();
  const done = new Promise<StreamResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`stream did not end in ${timeoutMs} ms; stdout so far: ${JSON.stringify(out)}`));
    }, timeoutMs);
    ws.on('message', (data: Buffer) => {
      if (data.length === 0) return;
      const payload = data.subarray(1).toString('utf8');
      if (data[0] === CH_STDOUT) out += payload;
      else if (data[0] === CH_STDERR) err += payload;
      else if (data[0] === CH_ERROR) errorChannel += payload;
      for (const w of waiters) w();
    });
    ws.on('close', () => {
      clearTimeout(timer);
      ended = true;
      for (const w of waiters) w();
      let status: StreamResult['status'];
      let exitCode = -1;
      if (errorChannel) {
        const s = JSON.parse(errorChannel) as {
          status?: string;
          message?: string;
          reason?: string;
          details?: { causes?: Array<{ reason?: string; message?: string }> };
        };
        status = s;
        if (s.status === 'Success') exitCode = 0;
        const cause = s.details?.causes?.find((c) => c.reason === 'ExitCode');
        if (cause?.message !== undefined) exitCode = Number(cause.message);
      }
      resolve({ stdout: out, stderr: err, exitCode, status });
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  done.catch(() => undefined);
  const frame = (ch: number, data: string | Buffer): Buffer =>
    Buffer.concat([Buffer.from([ch]), typeof data === 'string' ? Buffer.from(data) : data]);
  return new Promise((resolve, reject) => {
    ws.once('open', () =>
      resolve({
        stdout: () => out,
        stderr: () => err,
        send: (data) => ws.send(frame(CH_STDIN, data)),
        resize: (width, height) => ws.send(frame(CH_RESIZE, JSON.stringify({ Width: width, Height: height }))),
        waitOutput: (re, ms = 60_000) =>
          new Promise<void>((ok, fail) => {
            const check = (): void => {
              if (re.test(out)) {
                waiters.delete(check);
                clearTimeout(t);
                ok();
              } else if (ended) {
                waiters.delete(check);
                clearTimeout(t);
                fail(new Error(`stream ended without ${re} on stdout: ${JSON.stringify(out)} ${errorChannel}`));
              }
            };
            const t = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`no ${re} on stdout in ${ms} ms: ${JSON.stringify(out)}`));
            }, ms);
            waiters.add(check);
            check();
          }),
        done,
        close: () => ws.close(),
      }),
    );
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) =>
      reject(new Error(`streaming server answered HTTP ${res.statusCode} to the websocket upgrade`)),
    );
  });
}
