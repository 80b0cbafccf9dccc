// Structured logging shared by the shim, the 9P server and the guest agent.
// One JSON object per line on a writable (stderr by default), so that containerd's
// log fifo, the serial console and test output all carry the same context fields.

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

const levelRank: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50 };

export interface LogSink {
  write(line: string): unknown;
}

/** Extra fields for every line (the active span's trace and span ids when tracing); set by telemetry. */
let contextFields: (() => LogFields | undefined) | undefined;

export function setLogContext(fn: (() => LogFields | undefined) | undefined): void {
  contextFields = fn;
}

export class Logger {
  private readonly level: { min: LogLevel };

  constructor(
    private readonly sink: LogSink,
    minLevel: LogLevel | { min: LogLevel },
    private readonly fields: LogFields = {},
  ) {
    this.level = typeof minLevel === 'string' ? { min: minLevel } : minLevel;
  }

  /** A logger that adds fields (pod, container, exec ids...) to every line; it shares this one's level. */
  with(fields: LogFields): Logger {
    return new Logger(this.sink, this.level, { ...this.fields, ...fields });
  }

  /** Changes the level of this logger and of every logger made from it with with(). */
  setLevel(level: LogLevel): void {
    this.level.min = level;
  }

  get minLevel(): LogLevel {
    return this.level.min;
  }

  enabled(level: LogLevel): boolean {
    return levelRank[level] >= levelRank[this.level.min];
  }

  trace(msg: string, fields?: LogFields): void {
    this.log('trace', msg, fields);
  }
  debug(msg: string, fields?: LogFields): void {
    this.log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields);
  }

  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const entry: LogFields = {
      time: new Date().toISOString(),
      level,
      msg,
      ...this.fields,
      ...contextFields?.(),
      ...fields,
    };
    for (const [k, v] of Object.entries(entry)) {
      if (v instanceof Error) entry[k] = v.message;
    }
    try {
      this.sink.write(JSON.stringify(entry) + '\n');
    } catch {
      // A broken log sink (containerd gone, fifo closed) must never take the process down.
    }
  }
}

export function parseLogLevel(value: string | undefined, fallback: LogLevel = 'info'): LogLevel {
  return value !== undefined && value in levelRank ? (value as LogLevel) : fallback;
}

/** Logger to stderr; level from LCOW_LOG_LEVEL (default info). */
export function stderrLogger(fields: LogFields = {}): Logger {
  return new Logger(process.stderr, parseLogLevel(process.env.LCOW_LOG_LEVEL), fields);
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger = new Logger({ write: () => undefined }, 'error', {});
