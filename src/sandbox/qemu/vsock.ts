// The qemu backend's choice of transport, and what virtio-vsock needs from the host.
//
// `transport` (runtime config, or LCOW_QEMU_TRANSPORT): `tcp` is tcp+token through QEMU user networking and
// hostfwd (the agent listens, the shim dials in); `vsock` is virtio-vsock (-device vhost-vsock-pci): the shim
// listens on AF_VSOCK and the agent dials the host, with no TCP port at all; `auto` (the default) is vsock when
// the probe below passes, else tcp. A forced `vsock` that cannot work fails the boot saying what is missing.
//
// The probe: /dev/vhost-vsock opens read-write (what QEMU does with it), and this process can create an AF_VSOCK
// socket and bind it to (any CID, any port) (what the shim's listeners do). Both are needed; neither alone is.
//
// Guest CIDs are host-wide (one namespace for every VM on the host, whoever started it): each UVM takes a
// random one in [GUEST_CID_MIN, GUEST_CID_MAX] and QEMU refuses one that is taken ("vhost-vsock: unable to set
// guest cid: Address already in use"); the boot then retries with another (qemu.ts). 0, 1 and 2 are never guest
// CIDs (hypervisor, local, host), nor is VMADDR_CID_ANY (2^32-1).
import { randomInt } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { VHOST_VSOCK_DEVICE, vsockBindProbe } from '../../transport/index.js';

export type TransportSetting = 'auto' | 'vsock' | 'tcp';
export const TRANSPORT_SETTINGS: readonly TransportSetting[] = ['auto', 'vsock', 'tcp'];
export type QemuTransport = 'vsock' | 'tcp';

/** The lowest CID we hand out: well above the small numbers people configure by hand. */
export const GUEST_CID_MIN = 0x10000;
/** The highest: below VMADDR_CID_ANY (and within a signed 32-bit int for tools that print it so). */
export const GUEST_CID_MAX = 0x7fffffff;
/** QEMU's complaint when the guest CID is in use by another VM on the host. */
export const CID_IN_USE = 'unable to set guest cid';

/** `transport` from the environment (LCOW_QEMU_TRANSPORT) or the runtime config; absent: auto. */
export function parseTransportSetting(env: string | undefined, config: unknown): TransportSetting {
  const raw = env !== undefined && env !== '' ? env : config;
  if (raw === undefined || raw === null || raw === '') return 'auto';
  if (typeof raw === 'string' && (TRANSPORT_SETTINGS as readonly string[]).includes(raw.trim()))
    return raw.trim() as TransportSetting;
  const from = env !== undefined && env !== '' ? 'LCOW_QEMU_TRANSPORT' : 'transport';
  throw new Error(`${from} must be one of ${TRANSPORT_SETTINGS.join(', ')}, not ${JSON.stringify(raw)}`);
}

/** The host calls the probe makes (tests inject both answers). */
export interface VsockHost {
  /** Opens the vhost-vsock device read-write and closes it; throws when it cannot. */
  openDevice(path: string): void;
  /** Creates an AF_VSOCK socket and binds it to any CID, any port; throws when it cannot. */
  bindVsock(): void;
}

export const realVsockHost: VsockHost = {
  openDevice(path) {
    closeSync(openSync(path, constants.O_RDWR));
  },
  bindVsock: vsockBindProbe,
};

export type VsockProbe = { usable: true } | { usable: false; missing: string };

/** Whether virtio-vsock can carry this UVM's channels; if not, what is missing (for the operator). */
export function probeVsock(host: VsockHost = realVsockHost, device = VHOST_VSOCK_DEVICE): VsockProbe {
  try {
    host.openDevice(device);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? `no ${device} (load the vhost_vsock module: modprobe vhost_vsock)`
        : `${device} cannot be opened read-write (${code ?? (err as Error).message})`;
    return { usable: false, missing: why };
  }
  try {
    host.bindVsock();
  } catch (err) {
    return {
      usable: false,
      missing: `the host cannot bind an AF_VSOCK socket (${(err as Error).message}; is the vsock module loaded?)`,
    };
  }
  return { usable: true };
}

/** The transport for a boot: `auto` follows the probe; a forced `vsock` the probe refuses is an error. */
export function chooseTransport(setting: TransportSetting, probe: () => VsockProbe): QemuTransport {
  if (setting === 'tcp') return 'tcp';
  const p = probe();
  if (p.usable) return 'vsock';
  if (setting === 'vsock')
    throw new Error(`transport = "vsock" but virtio-vsock is unusable on this host: ${p.missing}`);
  return 'tcp';
}

/** A random guest CID in [GUEST_CID_MIN, GUEST_CID_MAX]. */
export function randomGuestCid(rand: (min: number, maxExclusive: number) => number = randomInt): number {
  const cid = rand(GUEST_CID_MIN, GUEST_CID_MAX + 1);
  if (!Number.isInteger(cid) || cid < GUEST_CID_MIN || cid > GUEST_CID_MAX)
    throw new Error(`guest CID ${cid} out of range`);
  return cid;
}
