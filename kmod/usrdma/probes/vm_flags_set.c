// SPDX-License-Identifier: GPL-2.0
/* vm_flags_set(): vma->vm_flags is read-only (6.3). */
#include <linux/mm.h>

void usrdma_probe(struct vm_area_struct *vma);
void usrdma_probe(struct vm_area_struct *vma)
{
	vm_flags_set(vma, VM_IO);
}
