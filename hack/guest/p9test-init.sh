#!/bin/busybox sh
# /init of the 9P kernel test guest (built by hack/guest/p9test-initrd.sh).
#
# Kernel command line parameters (all optional):
#   p9t.job=NAME:TRANS:PORT:ACTION:OPTS[:PEERPORT]   repeatable; run in order
#       TRANS  tcp | fd | listen      (fd: connect-fd connects a socket and mounts it with trans=fd;
#                                      listen: the guest listens on PORT, the host dials in through QEMU
#                                      hostfwd, and the accepted socket is mounted with trans=fd)
#       PORT   port on the host address (p9t.host), which QEMU user networking forwards to the host (listen:
#              the guest port)
#       ACTION battery | ro | bench | mount
#       OPTS   9P mount options, comma-separated (no ':' or spaces), e.g. version=9p2000.L,msize=262144,aname=x
#       PEERPORT  battery only: mount the export a second time through this port for the cross-mount lock checks
#   p9t.host=ADDR           address the guest dials (default 10.0.2.2; with restrict=on the harness forwards
#                           10.0.2.4:PORT with guestfwd, because slirp refuses guestfwd on its own 10.0.2.2)
#   p9t.bench=ARG,ARG,...   extra arguments of `p9battery bench`
#   p9t.checks=NAME,NAME    run only these battery checks
# Results go to the second serial port (ttyS1), one line each; the kernel console stays on ttyS0:
#   P9T boot uptime=S | P9T job NAME begin | <battery lines> | P9T job NAME end rc=N | P9T job NAME error ... |
#   P9T done uptime=S
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin

OUT=/dev/ttyS1
[ -c "$OUT" ] || OUT=/dev/console
say() { echo "$*" >"$OUT"; }
finish() {
  say "P9T done uptime=$(cut -d' ' -f1 /proc/uptime)"
  sync
  poweroff -f
  sleep 5
  echo o >/proc/sysrq-trigger
}

say "P9T boot uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
for m in $(cat /lib/modules.load); do
  insmod "/lib/modules/$m.ko" 2>/tmp/err || say "P9T error insmod $m: $(cat /tmp/err)"
done

hostname p9test
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2 ||
  say "P9T error network: $(ip link 2>&1 | tr '\n' ' ')"

HOST=10.0.2.2
BENCH_ARGS=""
CHECKS=""
JOBS=""
for word in $(cat /proc/cmdline); do
  case "$word" in
    p9t.job=*) JOBS="$JOBS ${word#p9t.job=}" ;;
    p9t.host=*) HOST=${word#p9t.host=} ;;
    p9t.bench=*) BENCH_ARGS=$(echo "${word#p9t.bench=}" | tr ',' ' ') ;;
    p9t.checks=*) CHECKS=$(echo "${word#p9t.checks=}" | tr ',' ' ') ;;
  esac
done

mount9p() { # TRANS PORT TARGET OPTS
  mkdir -p "$3"
  addr=$HOST
  [ "$1" = listen ] && addr=0.0.0.0
  connect-fd "$1" "$addr" "$2" "$3" "$4" 2>/tmp/err
}

for job in $JOBS; do
  IFS=: read -r name trans port action opts peer <<EOF
$job
EOF
  say "P9T job $name begin trans=$trans port=$port action=$action"
  t0=$(cut -d' ' -f1 /proc/uptime)
  if ! mount9p "$trans" "$port" "/mnt/$name" "$opts"; then
    say "P9T job $name error mount: $(cat /tmp/err)"
    say "P9T job $name end rc=99"
    continue
  fi
  say "P9T job $name mounted uptime=$(cut -d' ' -f1 /proc/uptime)"
  rc=0
  case "$action" in
    battery)
      peerdir=""
      if [ -n "$peer" ]; then
        if mount9p "$trans" "$peer" "/mnt/$name-peer" "$opts"; then
          peerdir="/mnt/$name-peer/battery"
        else
          say "P9T job $name error peer-mount: $(cat /tmp/err)"
        fi
      fi
      if mkdir -p "/mnt/$name/battery" 2>/tmp/err; then
        # shellcheck disable=SC2086
        P9_PEER="$peerdir" p9battery run "/mnt/$name/battery" $CHECKS >"$OUT" 2>&1 || rc=$?
      else
        say "P9T job $name error mkdir: $(cat /tmp/err)"
        rc=98
      fi
      [ -n "$peerdir" ] && umount "/mnt/$name-peer"
      ;;
    ro) p9battery ro "/mnt/$name" >"$OUT" 2>&1 || rc=$? ;;
    # shellcheck disable=SC2086
    bench) p9battery bench "/mnt/$name" $BENCH_ARGS >"$OUT" 2>&1 || rc=$? ;;
    mount) ls -la "/mnt/$name" >"$OUT" 2>&1 || rc=$? ;;
    *) say "P9T job $name error unknown action $action"; rc=97 ;;
  esac
  umount "/mnt/$name" 2>/tmp/err || say "P9T job $name error umount: $(cat /tmp/err)"
  say "P9T job $name end rc=$rc seconds=$(awk -v a="$t0" '{ printf "%.2f", $1 - a }' /proc/uptime)"
done
finish
