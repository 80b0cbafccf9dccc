// lcowctl's argument handling: common flags (--json, -n/--namespace, --state-root, --log-root) anywhere
// before `--`, command flags declared per command, positional arguments. Errors are CtlErrors with exit codes.
import { DEFAULT_LOG_ROOT, DEFAULT_STATE_ROOT } from '../config.js';

/**
 * lcowctl's exit codes. `exec` exits with the command's own status instead, 126 when the shim refused, 125 when
 * lcowctl itself failed (as docker exec does).
 */
export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  notFound: 3,
  refused: 4,
  execFailed: 125,
  execRefused: 126,
} as const;

export class CtlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

export const usageError = (msg: string): CtlError => new CtlError(msg, EXIT.usage);

export interface CommonOptions {
  json: boolean;
  namespace: string | undefined;
  stateRoot: string;
  logRoot: string;
}

export interface ParsedArgs {
  common: CommonOptions;
  /** Command flags by name (without dashes): true for booleans, the value otherwise. */
  flags: Record<string, string | true>;
  positional: string[];
  /** Everything after `--`. */
  rest: string[];
}

/**
 * `spec` lists the command's flags: `name` (boolean) or `name=` (takes a value); `short` maps one-letter
 * aliases. Unknown flags are usage errors.
 */
export function parseArgs(
  argv: string[],
  spec: readonly string[] = [],
  short: Record<string, string> = {},
  env: NodeJS.ProcessEnv = process.env,
): ParsedArgs {
  const common: CommonOptions = {
    json: false,
    namespace: undefined,
    stateRoot: env.LCOW_STATE_ROOT || DEFAULT_STATE_ROOT,
    logRoot: env.LCOW_LOG_ROOT || DEFAULT_LOG_ROOT,
  };
  const takesValue = new Set(spec.filter((s) => s.endsWith('=')).map((s) => s.slice(0, -1)));
  const booleans = new Set(spec.filter((s) => !s.endsWith('=')));
  const flags: Record<string, string | true> = {};
  const positional: string[] = [];
  let rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      inline = eq > 0 ? a.slice(eq + 1) : undefined;
    } else {
      name = short[a.slice(1)] ?? (a.slice(1) === 'n' ? 'namespace' : a.slice(1));
    }
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw usageError(`--${name} needs a value`);
      return v;
    };
    switch (name) {
      case 'json':
        common.json = true;
        continue;
      case 'namespace':
        common.namespace = value();
        continue;
      case 'state-root':
        common.stateRoot = value();
        continue;
      case 'log-root':
        common.logRoot = value();
        continue;
    }
    if (booleans.has(name)) {
      if (inline !== undefined) throw usageError(`--${name} takes no value`);
      flags[name] = true;
    } else if (takesValue.has(name)) flags[name] = value();
    else throw usageError(`unknown flag ${a}`);
  }
  return { common, flags, positional, rest };
}

export function positiveIntFlag(flags: ParsedArgs['flags'], name: string): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (v === true || !/^\d+$/.test(v) || Number(v) <= 0) throw usageError(`--${name} needs a positive integer`);
  return Number(v);
}
