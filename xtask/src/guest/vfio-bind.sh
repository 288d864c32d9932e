#!/bin/sh
# vfio-bind ADDR...: bind PCI devices (e.g. 0000:00:03.0) to vfio-pci and
# show their /dev/vfio group files. Exits non-zero when a bind fails.

if [ $# -eq 0 ]; then
	echo "usage: vfio-bind ADDR... (for example: vfio-bind \$(pci-find 1234 11e8))" >&2
	exit 2
fi
modprobe vfio-pci 2>/dev/null
failed=0
for addr in "$@"; do
	case "$addr" in
	*:*:*.*) ;;
	*) addr="0000:$addr" ;;
	esac
	dev="/sys/bus/pci/devices/$addr"
	if [ ! -d "$dev" ]; then
		echo "vfio-bind: there is no PCI device $addr" >&2
		failed=1
		continue
	fi
	echo vfio-pci >"$dev/driver_override"
	if [ -e "$dev/driver" ]; then
		current=$(basename "$(readlink "$dev/driver")")
		if [ "$current" != vfio-pci ]; then
			echo "$addr" >"$dev/driver/unbind"
		fi
	fi
	if [ ! -e "$dev/driver" ]; then
		echo "$addr" >/sys/bus/pci/drivers_probe
	fi
	driver=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)
	if [ "$driver" != vfio-pci ]; then
		echo "vfio-bind: $addr is not bound to vfio-pci (driver: ${driver:-none}); is there an IOMMU?" >&2
		failed=1
		continue
	fi
	group=$(basename "$(readlink "$dev/iommu_group")")
	echo "vfio-bind: $addr is bound to vfio-pci, IOMMU group $group: /dev/vfio/$group"
done
ls -l /dev/vfio
exit $failed
