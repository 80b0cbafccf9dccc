// Constants shared by the Task service and the light shim actions (`delete`, `-v`), kept in a module with no
// imports so that those actions do not load the service.
export const SHIM_VERSION = '0.1.0';
/**
 * Root of the shim's per-namespace state (sandbox state dirs are <root>/<pod id>). Linux: a tmpfs, gone at
 * reboot. Windows: under %ProgramData% (its default ACL lets users read it: nothing secret is ever written there).
 */
export function stateRootFor(namespace: string, platform: NodeJS.Platform = process.platform): string {
  if (platform === 'win32')
    return `${process.env.ProgramData || 'C:\\ProgramData'}\\containerd-shim-lcow\\state\\${namespace}`;
  return `/run/lcow/${namespace}`;
}
/** Per-bundle record that `delete` reads when the serving shim is dead. */
export const SANDBOX_RECORD_FILE = 'lcow-sandbox.json';
