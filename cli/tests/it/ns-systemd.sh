#!/bin/bash
# A real systemd for tests, as PID 1 of its own cgroup, pid, mount and uts
# namespaces, never on the host's cgroup (the recipe and its hazards:
# shared/notes/real-components.md, section 3a).
#
#   ns-systemd.sh DIR     # in the foreground: becomes the namespace's systemd
#
# DIR must exist and hold `units/` (unit files to install) and may hold
# `etc/` (a private /etc for the namespace); the system bus of
# the namespace appears on the host as DIR/bus/system_bus_socket. The caller
# puts this process into a cgroup of its own first (see support.rs), runs it
# under `unshare --cgroup --pid --fork --mount --uts --propagation private
# --mount-proc`, and stops it with SIGRTMIN+4 to systemd (the child of unshare).
set -e
dir=$1
# Every mount is private to this namespace and made with -n: nothing reaches
# the host's /run/mount.
# A private copy of /etc, when the test gave one (DIR/etc): what the
# namespace's services write there (hostnamed: /etc/hostname, by rename)
# stays in the copy.
if [ -d "$dir/etc" ]; then
    mount -n --bind "$dir/etc" /etc
fi
umount -n -R /sys/fs/cgroup
mount -n -t cgroup2 cgroup2 /sys/fs/cgroup
mount -n -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/lock
mount -n --bind "$dir/bus" /run/dbus
# The host's enabled units (etcd, postgresql, apt timers) stay hidden, and so
# does anything that would touch the shared /tmp or the host's devices.
mount -n -t tmpfs tmpfs /etc/systemd/system
E=/etc/systemd/system
for u in $(ls /lib/systemd/system/sysinit.target.wants/) systemd-journald.socket \
    systemd-journald-dev-log.socket systemd-journald-audit.socket systemd-initctl.socket \
    systemd-remount-fs.service systemd-fsck-root.service tmp.mount \
    systemd-tmpfiles-setup.service systemd-tmpfiles-clean.timer systemd-logind.service \
    getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
    systemd-udev-settle.service; do
    ln -sf /dev/null "$E/$u"
done
printf '[Unit]\nDescription=mgmt test boot target\nRequires=dbus.socket dbus.service\nAfter=dbus.socket dbus.service\n' >"$E/test.target"
cp -r "$dir"/units/. "$E/"
exec /lib/systemd/systemd --system --unit=test.target --log-target=null --show-status=no
