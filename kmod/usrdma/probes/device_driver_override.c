// SPDX-License-Identifier: GPL-2.0
/*
 * driver_override lives in struct device, behind
 * device_has_driver_override(), not in struct pci_dev (6.12.94 in the
 * 6.12 series).
 */
#include <linux/device.h>

bool usrdma_probe(struct device *dev);
bool usrdma_probe(struct device *dev)
{
	return device_has_driver_override(dev);
}
