// SPDX-License-Identifier: GPL-2.0
/*
 * usrdma: the largest coherent buffer the kernel can give a device, which
 * GET_INFO reports and ALLOC enforces.
 *
 * dma-direct (every device without an IOMMU) takes coherent memory from
 * the CMA area when the kernel has one (CONFIG_DMA_CMA) and otherwise from
 * the page allocator as one physically contiguous block, of at most
 * MAX_ORDER_NR_PAGES pages (4 MiB on x86 with 4 KiB pages, on every
 * kernel usrdma builds on: MAX_ORDER changed meaning in 6.4 and became
 * MAX_PAGE_ORDER in 6.8, MAX_ORDER_NR_PAGES kept its meaning). Debian's
 * kernels have no CMA, so an ALLOC above that used to fail with ENOMEM
 * after the header promised 1 GiB. Through an IOMMU (or another DMA layer
 * with its own ops) coherent memory need not be contiguous.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-mapping.h>
#include <linux/minmax.h>
#include <linux/mmzone.h>

#include "usrdma.h"

/*
 * The largest buffer ALLOC can give dev, in bytes; *flags gets
 * USRDMA_INFO_CMA when a CMA area may give more than the page allocator
 * (its size, set with cma= on the kernel command line, is not visible to
 * modules: then the limit is the module's own, 1 GiB).
 */
u64 usrdma_max_buf_size(struct device *dev, u32 *flags)
{
	u64 contiguous = (u64)MAX_ORDER_NR_PAGES << PAGE_SHIFT;

	*flags = 0;
	if (usrdma_dma_translated(dev))
		return USRDMA_MAX_BUF_SIZE;
	if (IS_ENABLED(CONFIG_DMA_CMA)) {
		*flags |= USRDMA_INFO_CMA;
		return USRDMA_MAX_BUF_SIZE;
	}
	return min_t(u64, contiguous, USRDMA_MAX_BUF_SIZE);
}
