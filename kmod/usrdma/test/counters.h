/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Counters the usrdma test programs check: the module's per-device
 * statistics in sysfs and this process's locked memory.
 */
#ifndef USRDMA_TEST_COUNTERS_H
#define USRDMA_TEST_COUNTERS_H

#include <stdio.h>
#include <string.h>

/* One value of /sys/bus/pci/devices/ADDR/usrdma_stats, or -1. */
static long stat_get(const char *addr, const char *key)
{
	char path[128], line[128], k[64];
	long v = -1, val;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/usrdma_stats", addr);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %ld", k, &val) == 2 && !strcmp(k, key))
			v = val;
	fclose(f);
	return v;
}

/* VmLck of this process in KiB (pinned pages are accounted there), or -1. */
static long vmlck_kb(void)
{
	char line[128];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

#endif /* USRDMA_TEST_COUNTERS_H */
