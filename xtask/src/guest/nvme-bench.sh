# The head of the NVMe benchmark's guest script (`cargo xtask bench`); the
# rig appends, for each group of comparable cases, `to_kernel`, the kernel's
# cases, `to_vfio` and usrdrv's, one `run_case KEY 'COMMAND'` line per case. Each case prints
# one line `usrdrv-nvme-bench: {"case":KEY,"busy_jiffies":N,"user_jiffies":N,"result":JSON}`
# (JSON: what the command wrote to /tmp/case.json), or {"case":KEY,"error":...}.

# Busy time of every CPU (user, nice, system, irq, softirq), then the user
# space part of it (user, nice), in USER_HZ ticks.
busy() {
	set -- $(head -n 1 /proc/stat)
	echo $(($2 + $3 + $4 + $7 + $8)) $(($2 + $3))
}

# The block device of namespace 1 of the NVMe controller at $1 (by its nsid:
# the kernel may name a controller's namespaces in any order).
blockdev() {
	for d in /sys/bus/pci/devices/$1/nvme/nvme*/nvme*n*; do
		[ "$(cat "$d/nsid" 2>/dev/null)" = 1 ] && basename "$d"
	done
}

failed=0
run_case() {
	key=$1
	cmd=$2
	rm -f /tmp/case.json
	set -- $(busy)
	b0=$1 u0=$2
	sh -c "$cmd" 2>/tmp/case.err
	rc=$?
	set -- $(busy)
	b1=$1 u1=$2
	if [ $rc -eq 0 ] && [ -s /tmp/case.json ]; then
		echo "usrdrv-nvme-bench: {\"case\":\"$key\",\"busy_jiffies\":$((b1 - b0)),\"user_jiffies\":$((u1 - u0)),\"result\":$(tr -d '\n\t' </tmp/case.json)}"
	else
		failed=1
		why=$(tail -c 400 /tmp/case.err | tr -d '\n"\\')
		echo "usrdrv-nvme-bench: {\"case\":\"$key\",\"error\":\"exit status $rc: $why\"}"
	fi
}

# Waits until both controllers' disks open; sets FILE_DEV and NULL_DEV
# (their names can change from one probe to the next).
find_devs() {
	tries=0
	while :; do
		FILE_DEV=/dev/$(blockdev "$FILE_ADDR")
		NULL_DEV=/dev/$(blockdev "$NULL_ADDR")
		if [ -b "$FILE_DEV" ] && [ -b "$NULL_DEV" ] &&
			head -c 512 "$FILE_DEV" >/dev/null 2>&1 && head -c 512 "$NULL_DEV" >/dev/null 2>&1; then
			break
		fi
		tries=$((tries + 1))
		if [ $tries -gt 30 ]; then
			echo "nvme-bench: no block devices for $FILE_ADDR and $NULL_ADDR"
			ls /sys/block
			exit 1
		fi
		sleep 1
	done
	export FILE_DEV NULL_DEV
}

# Both controllers to the kernel's nvme driver.
to_kernel() {
	for a in "$FILE_ADDR" "$NULL_ADDR"; do
		d=/sys/bus/pci/devices/$a
		echo >"$d/driver_override"
		if [ -e "$d/driver" ] && [ "$(basename "$(readlink "$d/driver")")" != nvme ]; then
			echo "$a" >"$d/driver/unbind"
		fi
		[ -e "$d/driver" ] || echo "$a" >/sys/bus/pci/drivers_probe
	done
	find_devs
}

# Both controllers to vfio-pci, for usrdrv.
to_vfio() {
	vfio-bind "$FILE_ADDR" "$NULL_ADDR" >/dev/null || {
		echo "nvme-bench: vfio-bind failed"
		exit 1
	}
}

find_devs
poll() { cat "/sys/block/${1#/dev/}/queue/io_poll" 2>/dev/null || echo null; }
echo "usrdrv-nvme-bench: {\"case\":\"environment\",\"kernel\":\"$(uname -r)\",\"cpus\":$(nproc),\"clocksource\":\"$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\",\"cmdline\":\"$(cat /proc/cmdline)\",\"file_dev\":\"$FILE_DEV\",\"null_dev\":\"$NULL_DEV\",\"file_io_poll\":$(poll "$FILE_DEV"),\"null_io_poll\":$(poll "$NULL_DEV"),\"fio\":\"$(fio --version)\"}"
