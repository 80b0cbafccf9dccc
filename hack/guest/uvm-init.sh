#!/bin/busybox sh
# /init of the utility VM (built by hack/guest/build-image.sh).
#
# Stage 1 (the kernel runs /init on the small early initramfs): load the modules, mount the read-only root
# image (erofs on virtio-blk, /dev/vda) under a tmpfs overlay (runc's pivot_root cannot leave an initramfs,
# and the root must be writable for the agent) and switch_root into it. Booted from the whole image as the
# initramfs instead (initrd-full.img, Hyper-V), it copies that into a tmpfs and switches there; with
# lcow.noswitch=1 (a rootfs VHD the kernel mounted) it goes straight on. Stage 2 (`/init stage2`, the same
# script in the root image): mount the usual filesystems, bring up eth0 for QEMU user networking and run the
# guest agent. When the agent exits, the VM powers off (QEMU runs with -no-reboot, so the shim sees QEMU exit).
#
# Kernel command line (no secret ever goes there; `ps` on the host shows it):
#   lcow.accept=URL     the agent LISTENS for the shim's control connection, e.g. tcp+token://10.0.2.15:1024
#                       (QEMU hostfwd from the host's loopback; the shim dials in, both prove the secret: src/transport/handshake.ts)
#   lcow.p9accept=URL   where the agent listens for the shim's 9P share connections (e.g. tcp+token://10.0.2.15:564)
#   lcow.dial=URL       instead of lcow.accept: the agent dials the host's control port, e.g. vsock://2:1024
#   lcow.p9=URL         with lcow.dial: where the agent dials for 9P shares (same transport)
#   lcow.transport=vsock  QEMU virtio-vsock (vhost-vsock-pci): load the virtio vsock transport; the agent dials
#                       the host at the vsock ports QEMU fw_cfg opt/lcow/vsock names (the host's listeners took
#                       free ports, and vsock ports are host-wide)
#   lcow.token=PATH     the per-UVM secret (default: QEMU fw_cfg opt/lcow/token); under Hyper-V vsock://2:PORT,
#                       where the host hands it out once (there is no fw_cfg)
#   lcow.hv=1           Hyper-V (HCS) guest: load the VMBus drivers (hv_sock), skip the virtio ones
#   lcow.noswitch=1     the kernel mounted the root itself (HCS with a rootfs VHD): no early stage
#   lcow.jitless=1      the agent's Node runs without its JIT (the shim's agent_jit)
#   lcow.mode=agent|vsocktest|floor|shell   vsocktest: run the guest transport self-test and power off;
#                       floor: start node once (`node -e 0`) and power off (the bench's floor for pod start)
#   lcow.runtime=runc|crun  the OCI runtime the agent runs containers with (default runc); one the image does
#                       not carry fails the boot ("LCOW fatal ...", which the shim reports as the boot's error)
#   lcow.debug=1        verbose agent logs
# The console (ttyS0) goes to the shim's log: lines starting "LCOW " are for the shim.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# Hyper-V (HCS) passes lcow.hv=1: VMBus first (it creates /sys/bus/vmbus), then hv_sock and friends; the virtio
# drivers are skipped there (no PCI, and the virtio vsock transport must not take hv_sock's place). Under QEMU
# the hv_* modules and the SCSI disk stack are skipped. The vsock core and the virtio vsock transport only when
# this guest uses them (lcow.transport=vsock; vsock_loopback only for lcow.mode=vsocktest): a guest on tcp+token
# has no AF_VSOCK at all. Runs in both stages (what stage 1 loaded is skipped).
load_modules() {
  hv=""
  vs=""
  lo=""
  grep -qw 'lcow.hv=1' /proc/cmdline && hv=1
  grep -qw 'lcow.transport=vsock' /proc/cmdline && vs=1
  grep -qw 'lcow.mode=vsocktest' /proc/cmdline && vs=1 && lo=1
  for m in $(cat /lib/modules/modules.load); do
    [ -d "/sys/module/$m" ] && continue
    case "$m" in
      vsock) [ -n "$hv$vs" ] || continue ;;
      vsock_loopback) [ -n "$lo" ] || continue ;;
      vmw_vsock_virtio*) [ -z "$hv" ] && [ -n "$vs" ] || continue ;;
      hv_vmbus) [ -n "$hv" ] || continue ;;
      hv_* | hyperv_*) [ -d /sys/bus/vmbus ] || continue ;;
      # The SCSI disk stack for container layers (hot-added VHDs): Hyper-V only. These come in as the
      # dependencies of hv_storvsc, sd_mod and ext4 (hack/guest/build-image.sh MODULES).
      crc16 | mbcache | jbd2 | ext4 | scsi_common | scsi_mod | scsi_transport_fc | sd_mod | t10_pi | crc64 | \
        crc64_rocksoft | crct10dif_common | crc_t10dif) [ -n "$hv" ] || continue ;;
      virtio* | virtio_*) [ -z "$hv" ] || continue ;;
    esac
    insmod "/lib/modules/$m.ko" 2>/dev/null || echo "LCOW warn insmod $m failed"
  done
}

if [ "$1" != stage2 ]; then
  B=/bin/busybox
  $B mount -t proc proc /proc
  if $B grep -q 'lcow.noswitch=1' /proc/cmdline; then
    $B umount /proc
    exec /init stage2
  fi
  if [ -x /usr/bin/node ]; then
    # The whole image as the initramfs (initrd-full.img: Hyper-V, which has no virtio-blk for the root image):
    # copy it into a tmpfs and switch_root into that.
    $B mkdir -p /newroot
    $B mount -t tmpfs -o mode=0755 rootfs /newroot
    for d in /*; do
      case "$d" in /proc | /newroot | /sys | /dev) ;; *) $B cp -a "$d" /newroot/ ;; esac
    done
    $B mkdir -p /newroot/proc /newroot/sys /newroot/dev
    $B umount /proc
    exec $B switch_root /newroot /init stage2
  fi
  $B mount -t sysfs sysfs /sys
  $B mount -t devtmpfs devtmpfs /dev
  PATH=/bin
  load_modules
  i=0
  while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do $B usleep 100000; i=$((i + 1)); done
  [ -b /dev/vda ] || { echo "LCOW fatal no root image on /dev/vda"; $B poweroff -f; }
  $B mount -t erofs -o ro /dev/vda /lower || { echo "LCOW fatal cannot mount the root image"; $B poweroff -f; }
  $B mount -t tmpfs -o mode=0755 upper /upper
  $B mkdir -p /upper/data /upper/work
  $B mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
    { echo "LCOW fatal cannot mount the root overlay"; $B poweroff -f; }
  $B umount /dev /sys /proc
  exec $B switch_root /newroot /init stage2
fi

mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx 2>/dev/null
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
mount -t tmpfs -o mode=0755,nosuid,nodev run /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmp /tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
# Give every controller to the children (runc creates the container cgroups below the root).
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >>/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

echo "LCOW init uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
load_modules

hostname lcow
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 ||
    echo "LCOW warn network setup failed"
fi

MODE=agent
DIAL=""
P9=""
ACCEPT=""
P9ACCEPT=""
TOKEN=/sys/firmware/qemu_fw_cfg/by_name/opt/lcow/token/raw
VSOCK_PORTS=""
DEBUG=""
NODE_JIT=""
RUNTIME=runc
for word in $(cat /proc/cmdline); do
  case "$word" in
    lcow.dial=*) DIAL=${word#lcow.dial=} ;;
    lcow.p9=*) P9=${word#lcow.p9=} ;;
    lcow.accept=*) ACCEPT=${word#lcow.accept=} ;;
    lcow.p9accept=*) P9ACCEPT=${word#lcow.p9accept=} ;;
    lcow.token=*) TOKEN=${word#lcow.token=} ;;
    lcow.transport=vsock) VSOCK_PORTS=/sys/firmware/qemu_fw_cfg/by_name/opt/lcow/vsock/raw ;;
    lcow.mode=*) MODE=${word#lcow.mode=} ;;
    lcow.debug=1) DEBUG=1 ;;
    # The shim's agent_jit (auto: under TCG, where QEMU translates every code blob V8 generates again).
    lcow.jitless=1) NODE_JIT=--jitless ;;
    lcow.runtime=*) RUNTIME=${word#lcow.runtime=} ;;
  esac
done
case "$RUNTIME" in
  runc | crun) command -v "$RUNTIME" >/dev/null || { echo "LCOW fatal OCI runtime $RUNTIME is not in the guest image (rebuild it: make guest)"; poweroff -f; } ;;
  *) echo "LCOW fatal unknown OCI runtime $RUNTIME (lcow.runtime=runc|crun)"; poweroff -f ;;
esac
echo "LCOW ready-for-agent uptime=$(cut -d' ' -f1 /proc/uptime)"

case "$MODE" in
  agent)
    if [ -n "$ACCEPT" ]; then
      set -- --accept "$ACCEPT" --p9-accept "$P9ACCEPT"
    elif [ -n "$VSOCK_PORTS" ]; then
      set -- --vsock-ports "$VSOCK_PORTS"
    else
      set -- --dial "$DIAL" --p9 "$P9"
    fi
    # A small young generation: in a UVM restored from a template, every page the agent's GC writes becomes
    # that clone's private copy; 16 MiB semispaces (the default) would be copied back and forth by scavenges.
    LCOW_DEBUG=$DEBUG node --max-semi-space-size=1 $NODE_JIT /opt/lcow/shim/lcow-agent.js --state-dir /run/lcow "$@" --token-file "$TOKEN" --oci-runtime "$RUNTIME"
    echo "LCOW agent exited rc=$?"
    ;;
  vsocktest)
    node /opt/lcow/shim/lcow-agent.js --vsock-selftest
    echo "LCOW vsocktest exited rc=$?"
    ;;
  floor)
    node -e 0
    echo "LCOW floor node-done uptime=$(cut -d' ' -f1 /proc/uptime)"
    ;;
  shell)
    sh
    ;;
esac
sync
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
