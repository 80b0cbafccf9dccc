// Unit suites that test configuration defaults must not see the variables `make test` sets for the suites that
// boot real VMs (LCOW_QEMU_TRANSPORT=tcp): unset them for the suite, restore them after.

/** Registers before/after hooks in the current describe that unset `names` and restore them afterwards. */
export function withoutEnv(...names: string[]): void {
  const saved = new Map<string, string | undefined>();
  before(() => {
    for (const n of names) {
      saved.set(n, process.env[n]);
      delete process.env[n];
    }
  });
  after(() => {
    for (const [n, v] of saved) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
  });
}
