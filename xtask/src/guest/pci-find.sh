#!/bin/sh
# pci-find VENDOR DEVICE: print the addresses of the PCI devices with these
# IDs (hex, with or without 0x), one a line. Exits 1 when there is none.

if [ $# -ne 2 ]; then
	echo "usage: pci-find VENDOR DEVICE (for example: pci-find 1234 11e8)" >&2
	exit 2
fi
want_vendor=$(echo "0x${1#0x}" | tr A-F a-f)
want_device=$(echo "0x${2#0x}" | tr A-F a-f)
found=1
for dev in /sys/bus/pci/devices/*; do
	if [ "$(cat "$dev/vendor")" = "$want_vendor" ] && [ "$(cat "$dev/device")" = "$want_device" ]; then
		basename "$dev"
		found=0
	fi
done
exit $found
