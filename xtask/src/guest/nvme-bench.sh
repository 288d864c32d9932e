# The head of the NVMe benchmark's guest script (`cargo xtask bench`); the
# rig appends one `run_case KEY 'COMMAND'` line per case. Each case prints
# one line `usrdrv-nvme-bench: {"case":KEY,"busy_jiffies":N,"result":JSON}`
# (JSON: what the command wrote to /tmp/case.json), or {"case":KEY,"error":...}.

# Busy time of every CPU (user, nice, system, irq, softirq), in USER_HZ ticks.
busy() {
	set -- $(head -n 1 /proc/stat)
	echo $(($2 + $3 + $4 + $7 + $8))
}

# The first namespace's block device of the NVMe controller at $1.
blockdev() {
	for d in /sys/bus/pci/devices/$1/nvme/nvme*/nvme*n1; do
		[ -e "$d" ] && basename "$d"
	done
}

failed=0
run_case() {
	key=$1
	shift
	rm -f /tmp/case.json
	b0=$(busy)
	sh -c "$1" 2>/tmp/case.err
	rc=$?
	b1=$(busy)
	if [ $rc -eq 0 ] && [ -s /tmp/case.json ]; then
		echo "usrdrv-nvme-bench: {\"case\":\"$key\",\"busy_jiffies\":$((b1 - b0)),\"result\":$(tr -d '\n\t' </tmp/case.json)}"
	else
		failed=1
		why=$(tail -c 400 /tmp/case.err | tr -d '\n"\\')
		echo "usrdrv-nvme-bench: {\"case\":\"$key\",\"error\":\"exit status $rc: $why\"}"
	fi
}

FILE_DEV=/dev/$(blockdev "$FILE_ADDR")
NULL_DEV=/dev/$(blockdev "$NULL_ADDR")
export FILE_DEV NULL_DEV
if [ ! -b "$FILE_DEV" ] || [ ! -b "$NULL_DEV" ]; then
	echo "nvme-bench: no block devices for $FILE_ADDR and $NULL_ADDR"
	ls /sys/block
	exit 1
fi
poll() { cat "/sys/block/${1#/dev/}/queue/io_poll" 2>/dev/null || echo null; }
echo "usrdrv-nvme-bench: {\"case\":\"environment\",\"kernel\":\"$(uname -r)\",\"cpus\":$(nproc),\"clocksource\":\"$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\",\"cmdline\":\"$(cat /proc/cmdline)\",\"file_dev\":\"$FILE_DEV\",\"null_dev\":\"$NULL_DEV\",\"file_io_poll\":$(poll "$FILE_DEV"),\"null_io_poll\":$(poll "$NULL_DEV"),\"fio\":\"$(fio --version)\"}"
