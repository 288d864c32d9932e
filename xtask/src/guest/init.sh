#!/bin/busybox sh
# /init of the usrdrv VM (PID 1), written into the initramfs by `cargo xtask`.
# It prepares the system, loads the VFIO/NVMe/UIO modules, runs
# /etc/usrdrv/command.sh as root and powers off. The host reads the marker
# lines `usrdrv-guest-ready:` and `usrdrv-guest-exit: <status>`.

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /mnt
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/bin
export HOME=/root TERM=dumb

mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null ||
	echo "usrdrv-guest: hugetlbfs is not available"
ln -sf /proc/self/fd /dev/fd

for module in $(cat /etc/usrdrv/modules); do
	modprobe "$module" || echo "usrdrv-guest: failed to load kernel module $module"
done

read -r uptime _ </proc/uptime
echo "usrdrv-guest-ready: kernel $(uname -r), up ${uptime} s"
cd /root
sh /etc/usrdrv/command.sh </dev/null
status=$?
echo
echo "usrdrv-guest-exit: $status"
sync
poweroff -f
# Not reached; if poweroff failed, the host sees QEMU stop on the panic.
exit "$status"
