// Where a guest dials its host over vsock, as the host hands it over (QEMU fw_cfg opt/lcow/vsock): text, one
// `name=port` per line, `control` and `p9`. The host's listeners take free ports (vsock ports are host-wide), so
// the guest learns them at boot, as it learns the secret, rather than from the kernel command line.

export interface VsockPorts {
  control: number;
  p9: number;
}

/** Ports are vsock ports: 1..2^32-2 (2^32-1 is VMADDR_PORT_ANY). */
function checkPort(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1 || v >= 0xffffffff) throw new Error(`vsock ports: invalid ${name} port ${v}`);
  return v;
}

export function formatVsockPorts(p: VsockPorts): string {
  return `control=${checkPort('control', p.control)}\np9=${checkPort('p9', p.p9)}\n`;
}

export function parseVsockPorts(text: string): VsockPorts {
  if (text.length > 256) throw new Error('vsock ports: file too long');
  const got: Partial<Record<keyof VsockPorts, number>> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^(control|p9)=(\d{1,10})$/.exec(line.trim());
    if (!m) throw new Error(`vsock ports: bad line ${JSON.stringify(line)}`);
    const name = m[1] as keyof VsockPorts;
    if (got[name] !== undefined) throw new Error(`vsock ports: ${name} given twice`);
    got[name] = checkPort(name, Number(m[2]));
  }
  if (got.control === undefined || got.p9 === undefined) throw new Error('vsock ports: control and p9 are required');
  return { control: got.control, p9: got.p9 };
}
