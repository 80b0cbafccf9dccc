// Go `flag`-style parsing of the shim command line: flags (-name value, -name=value, --name, bool flags
// alone) before the action word; parsing stops at the first non-flag argument.
export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  action: string;
  rest: string[];
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  address: 'address',
  'publish-binary': 'publishBinary',
  id: 'id',
  bundle: 'bundle',
  socket: 'socket',
};
const BOOL_FLAGS: Record<string, keyof ShimFlags> = { debug: 'debug', v: 'version', version: 'version' };

export function parseFlags(argv: string[]): ShimFlags {
  const f: ShimFlags = {
    namespace: '',
    address: '',
    publishBinary: '',
    id: '',
    bundle: '',
    socket: '',
    debug: false,
    version: false,
    action: '',
    rest: [],
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name in BOOL_FLAGS) {
      (f as unknown as Record<string, unknown>)[BOOL_FLAGS[name]!] = inline === undefined ? true : inline === 'true';
      continue;
    }
    const key = STRING_FLAGS[name];
    if (!key) throw new Error(`flag provided but not defined: -${name}`);
    const v = inline ?? argv[++i];
    if (v === undefined) throw new Error(`flag needs an argument: -${name}`);
    (f as unknown as Record<string, unknown>)[key] = v;
  }
  f.action = argv[i] ?? '';
  f.rest = argv.slice(i + 1);
  return f;
}
