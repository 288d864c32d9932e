// SPDX-License-Identifier: GPL-2.0
/*
 * Not a feature: must always compile. If it does not, the probes cannot
 * be trusted and the build stops with the compiler's message.
 */
#include <linux/module.h>
#include <linux/pci.h>

int usrdma_probe(struct pci_dev *pdev);
int usrdma_probe(struct pci_dev *pdev)
{
	return pci_enable_device(pdev);
}
