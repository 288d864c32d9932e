// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: which of the caller's memory MAP_USER may pin for the long term.
 *
 * A MAP_USER pin lasts as long as the mapping (FOLL_LONGTERM), and the
 * device may write the pages all that time without the kernel seeing it.
 * That is safe for memory that no file system writes back: anonymous
 * memory, shmem (tmpfs, memfd, SysV shm, MAP_SHARED|MAP_ANONYMOUS) and
 * hugetlb. A shared mapping of any other file is page cache that its file
 * system writes back, truncates and migrates: a long-term writable pin of
 * it breaks writeback (the page changes under it, or is written back
 * clean while the device dirties it, which some file systems answer with
 * a BUG), and a read-only one keeps the file's pages from ever going. How
 * GUP itself treats such pins changed over the kernels usrdma builds on
 * (6.1 pins them; later kernels refuse some of them in the fast path
 * only, with EFAULT), so the module decides from the VMAs, the same on
 * every kernel.
 *
 * Private mappings of files are allowed: a writable pin copies the pages
 * first (copy on write, so the device gets anonymous pages), and a
 * read-only one (TO_DEVICE, e.g. constant data in a program's image) only
 * lets the device read what the process reads. VM_IO and VM_PFNMAP
 * mappings (device memory, this module's own) are left to GUP, which
 * refuses them with EFAULT.
 *
 * The check and the pin are two steps (pin_user_pages_fast() takes
 * mmap_lock itself, and pinning under the caller's lock changed its
 * signature across these kernels): a process that replaces its own
 * mapping in between can still have file pages pinned. It has
 * CAP_SYS_RAWIO and a device that reaches all memory, so this check is
 * there to stop mistakes with a clear error, not an attacker.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/hugetlb.h>
#include <linux/magic.h>
#include <linux/mm.h>
#include <linux/sched.h>

#include "usrdma.h"

/* Whether a long-term pin of vma's pages is allowed (see above). */
static bool usrdma_vma_pinnable(struct vm_area_struct *vma)
{
	if (vma->vm_flags & (VM_IO | VM_PFNMAP))
		return true;	/* GUP refuses these itself */
	if (is_vm_hugetlb_page(vma) || vma_is_anonymous(vma))
		return true;
	if (!(vma->vm_flags & VM_MAYSHARE))
		return true;	/* private: copy on write, or read-only */
	/*
	 * Shared and file-backed: only shmem. Its files (memfd, SysV shm and
	 * shared anonymous memory included) live on a tmpfs superblock;
	 * vma_is_shmem() and shmem_mapping() are not exported on every kernel.
	 */
	return vma->vm_file &&
	       file_inode(vma->vm_file)->i_sb->s_magic == TMPFS_MAGIC;
}

/*
 * Checks that every VMA of the caller over [start, end) may be pinned for
 * the long term: 0, EINVAL for memory that may not (a shared mapping of a
 * regular file), EFAULT for a hole (as GUP would say), EINTR for a fatal
 * signal while waiting for mmap_lock.
 */
int usrdma_check_pinnable(unsigned long start, unsigned long end)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int ret = 0;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	while (start < end) {
		vma = find_vma(mm, start);
		if (!vma || vma->vm_start > start) {
			ret = -EFAULT;
			break;
		}
		if (!usrdma_vma_pinnable(vma)) {
			ret = -EINVAL;
			break;
		}
		start = vma->vm_end;
	}
	mmap_read_unlock(mm);
	return ret;
}
