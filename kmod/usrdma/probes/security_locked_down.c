// SPDX-License-Identifier: GPL-2.0
/*
 * security_locked_down() and LOCKDOWN_PCI_ACCESS (5.4): the lockdown LSM's
 * question whether user space may drive PCI devices directly.
 */
#include <linux/security.h>

int usrdma_probe(void);
int usrdma_probe(void)
{
	return security_locked_down(LOCKDOWN_PCI_ACCESS);
}
