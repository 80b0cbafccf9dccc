#!/usr/bin/env node
// lcowctl: admin and debug CLI. Each subcommand lives in its own module and is loaded on demand.

type SubcommandMain = (argv: string[]) => Promise<number>;

/** An operator command of src/ops/ctl (help text there). */
const ops = (name: string) => async (): Promise<SubcommandMain> => {
  const { run } = await import('../src/ops/ctl/main.js');
  return (argv) => run(name, argv);
};

const subcommands: Record<string, { summary: string; load: () => Promise<SubcommandMain> }> = {
  pods: {
    summary: 'every pod on this host: id, namespace, backend, transport, uptime, memory, containers',
    load: ops('pods'),
  },
  ps: { summary: "a pod's containers and processes", load: ops('ps') },
  console: { summary: "a pod's UVM console log (or agent log), also after it is gone; --follow", load: ops('console') },
  stats: { summary: "a pod's metrics: 9P per operation, fids, boot phases, agent RPC latency", load: ops('stats') },
  exec: { summary: 'run a command in the UVM itself (needs allow_uvm_exec; logged)', load: ops('exec') },
  prune: { summary: 'delete the kept logs of stopped pods', load: ops('prune') },
  '9p': {
    summary: 'serve host directories over 9P2000.L (debugging, benchmarks, tests)',
    load: async () => (await import('../src/p9/cli.js')).main,
  },
  doctor: {
    summary:
      'check this host (KVM or TCG, vhost-vsock, QEMU, runc, guest image, containerd config) and say what to fix',
    load: async () => (argv) => import('../src/doctor/cli.js').then((m) => m.main(argv)),
  },
  template: {
    summary: 'UVM templates: build (what the shim runs in the background), ls, rm',
    load: async () => (await import('../src/sandbox/qemu/template-cli.js')).main,
  },
};

async function usage(full = true): Promise<string> {
  const lines = ['usage: lcowctl <command> [args...]', '', 'commands:'];
  for (const [name, { summary }] of Object.entries(subcommands)) lines.push(`  ${name.padEnd(10)} ${summary}`);
  if (!full) return lines.join('\n');
  const { HELP, COMMON_HELP } = await import('../src/ops/ctl/main.js');
  lines.push('', 'Operator commands in detail:', '');
  for (const { usage: u } of Object.values(HELP)) lines.push(u, '');
  lines.push(
    COMMON_HELP,
    '',
    "`lcowctl COMMAND --help` prints one command's help; `lcowctl 9p serve --help` the 9P server's.",
  );
  return lines.join('\n');
}

async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    if (name === 'help' && rest[0] && subcommands[rest[0]]) return (await subcommands[rest[0]]!.load())(['--help']);
    process.stdout.write((await usage()) + '\n');
    return name === undefined ? 2 : 0;
  }
  const sub = subcommands[name];
  if (!sub) {
    process.stderr.write(`lcowctl: unknown command "${name}"\n${await usage(false)}\n`);
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
