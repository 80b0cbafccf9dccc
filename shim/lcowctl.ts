#!/usr/bin/env node
// lcowctl: admin and debug CLI. Each subcommand lives in its own module and is loaded on demand.

type SubcommandMain = (argv: string[]) => Promise<number>;

const subcommands: Record<string, { summary: string; load: () => Promise<SubcommandMain> }> = {
  '9p': {
    summary: 'serve host directories over 9P2000.L (debugging, benchmarks, tests)',
    load: async () => (await import('../src/p9/cli.js')).main,
  },
  template: {
    summary: 'UVM templates: build (what the shim runs in the background), ls, rm',
    load: async () => (await import('../src/sandbox/qemu/template-cli.js')).main,
  },
};

function usage(): string {
  const lines = ['usage: lcowctl <command> [args...]', '', 'commands:'];
  for (const [name, { summary }] of Object.entries(subcommands)) lines.push(`  ${name.padEnd(10)} ${summary}`);
  return lines.join('\n');
}

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  const sub = subcommands[name];
  if (!sub) {
    process.stderr.write(`lcowctl: unknown command "${name}"\n${usage()}\n`);
    return 2;
  }
  return (await sub.load())(rest);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`lcowctl: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
