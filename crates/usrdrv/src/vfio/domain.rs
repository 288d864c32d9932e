//! An IOMMU domain over VFIO: one container, its groups, and the device
//! addresses handed out in it. Implements the DMA backend.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vfio_bindings::bindings::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};

use super::{Container, Group, IommuInfo, VfioError, iommu_info};
use crate::dma::backend::{Allocation, DmaBackend, SgList, UserMapping, alloc_memory, page_span};
use crate::dma::{Direction, DmaError, DmaMask, IovaAllocator, IovaError, SgEntry, map_failure};
use crate::sys::dma_memory::HUGE_PAGE_SIZE;
use crate::sys::vfio_ioctl;

/// One IOMMU address space that several devices can share.
///
/// Devices opened in the same domain see the same device addresses, so a buffer
/// allocated through one can be given to another. Every address handed out is
/// below the domain's DMA mask: declare the smallest mask of the devices you put
/// in it. Without an explicit domain, [`crate::Device::open`] makes one per
/// device.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
/// use usrdrv::vfio::IommuDomain;
///
/// let domain = IommuDomain::new(DmaMask::new(32)?)?;
/// let nic = Device::open_in(&domain, "0000:03:00.0".parse()?)?;
/// let fpga = Device::open_in(&domain, "0000:04:00.0".parse()?)?;
/// let shared = nic.alloc_dma(1 << 20)?; // fpga can DMA to shared.device_addr() too
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct IommuDomain {
    inner: Arc<Domain>,
}

/// The shared state behind an [`IommuDomain`].
#[derive(Debug)]
pub(crate) struct Domain {
    container: Arc<Container>,
    mask: DmaMask,
    /// Open groups by number; kept open while the domain lives so its mappings
    /// stay valid whatever order handles are dropped in.
    groups: Mutex<HashMap<u32, Arc<Group>>>,
    /// Known once the first group is attached and the IOMMU model set.
    space: Mutex<Option<AddressSpace>>,
    /// The IOMMU's smallest page, set with `space` (read without its lock on
    /// every mapping).
    page_size: AtomicU64,
}

#[derive(Debug)]
struct AddressSpace {
    info: IommuInfo,
    iovas: IovaAllocator,
    /// Single-page device addresses freed recently, handed out again first:
    /// the common map/unmap of one page then skips the allocator's tree.
    recycled_pages: Vec<u64>,
}

/// The page size assumed until the IOMMU reports its own.
const DEFAULT_PAGE_SIZE: u64 = 4096;

/// How many single-page addresses are kept for reuse.
const RECYCLED_PAGES: usize = 256;

impl AddressSpace {
    fn alloc(&mut self, size: u64, align: u64) -> Result<u64, IovaError> {
        let page = self.iovas.page_size();
        if size == page
            && align <= page
            && let Some(iova) = self.recycled_pages.pop()
        {
            return Ok(iova);
        }
        match self.iovas.alloc(size, align) {
            Err(IovaError::Exhausted { .. }) if !self.recycled_pages.is_empty() => {
                for iova in self.recycled_pages.drain(..) {
                    self.iovas.free(iova)?;
                }
                self.iovas.alloc(size, align)
            }
            other => other,
        }
    }

    fn free(&mut self, iova: u64, size: u64) -> Result<(), IovaError> {
        if size == self.iovas.page_size() && self.recycled_pages.len() < RECYCLED_PAGES {
            self.recycled_pages.push(iova);
            return Ok(());
        }
        self.iovas.free(iova).map(drop)
    }
}

/// 64 random bits: std's per-process random hash keys, stirred by a counter.
/// Not for cryptography; enough that two domains rarely start alike.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IommuDomain {
    /// Opens a new container for a domain whose device addresses stay below `mask`.
    pub fn new(mask: DmaMask) -> Result<Self, VfioError> {
        Ok(Self {
            inner: Arc::new(Domain {
                container: Container::open()?,
                mask,
                groups: Mutex::new(HashMap::new()),
                space: Mutex::new(None),
                page_size: AtomicU64::new(DEFAULT_PAGE_SIZE),
            }),
        })
    }

    /// The DMA mask every device address in this domain fits under.
    pub fn mask(&self) -> DmaMask {
        self.inner.mask
    }

    /// The container underneath (its descriptor serves ioctls usrdrv does not wrap).
    pub fn container(&self) -> &Arc<Container> {
        &self.inner.container
    }

    /// What the IOMMU reports, once a device has been opened in the domain.
    pub fn iommu_info(&self) -> Option<IommuInfo> {
        lock(&self.inner.space).as_ref().map(|s| s.info.clone())
    }

    /// Device-address bytes still free below the mask, once a device is open.
    pub fn free_device_addresses(&self) -> Option<u64> {
        lock(&self.inner.space)
            .as_ref()
            .map(|s| s.iovas.free_bytes())
    }

    /// Group `id`, opened and attached to this domain's container on first use.
    pub(crate) fn group(&self, id: u32) -> Result<Arc<Group>, VfioError> {
        let mut groups = lock(&self.inner.groups);
        if self.inner.container.mappings_gone() {
            return Err(VfioError::DomainReleased { group: id });
        }
        if let Some(group) = groups.get(&id).filter(|g| !g.is_detached()) {
            return Ok(Arc::clone(group));
        }
        let group = Group::open(id, &self.inner.container)?;
        self.inner.init_space()?;
        groups.insert(id, Arc::clone(&group));
        Ok(group)
    }

    pub(crate) fn backend(&self) -> Arc<Domain> {
        Arc::clone(&self.inner)
    }
}

impl Domain {
    /// Reads the IOMMU's properties and builds the allocator, once.
    fn init_space(&self) -> Result<(), VfioError> {
        let mut space = lock(&self.space);
        if space.is_some() {
            return Ok(());
        }
        let bytes = vfio_ioctl::iommu_get_info(self.container.as_fd()).map_err(|source| {
            VfioError::Ioctl {
                op: "VFIO_IOMMU_GET_INFO",
                target: "/dev/vfio/vfio".into(),
                source,
            }
        })?;
        let info = iommu_info::parse(&bytes).map_err(|why| VfioError::BadReply {
            op: "VFIO_IOMMU_GET_INFO",
            target: "/dev/vfio/vfio".into(),
            why: why.to_string(),
        })?;
        let mut iovas =
            IovaAllocator::new(&info.iova_ranges, self.mask.bits(), info.min_page_size())
                .map_err(VfioError::AddressSpace)?;
        // A new domain starts handing out addresses at a random page, so a
        // transfer a previous owner of the device left queued most likely
        // hits an address nothing is mapped at, and the IOMMU stops it.
        iovas.start_at_random_page(random_u64());
        self.page_size.store(iovas.page_size(), Ordering::Relaxed);
        *space = Some(AddressSpace {
            info,
            iovas,
            recycled_pages: Vec::with_capacity(RECYCLED_PAGES),
        });
        Ok(())
    }

    fn page_size(&self) -> usize {
        usize::try_from(self.page_size.load(Ordering::Relaxed)).unwrap_or(4096)
    }

    /// Reserves `size` bytes of device addresses aligned to `align`.
    fn alloc_iova(&self, size: u64, align: u64) -> Result<u64, DmaError> {
        let mut space = lock(&self.space);
        // A `Domain` reaches the DMA types only through a device opened in
        // it, which set the address space up.
        let space = space.as_mut().ok_or(DmaError::NoDevice)?;
        Ok(space.alloc(size, align)?)
    }

    fn free_iova(&self, iova: u64, size: u64) -> Result<(), DmaError> {
        let mut space = lock(&self.space);
        if let Some(space) = space.as_mut() {
            space.free(iova, size)?;
        }
        Ok(())
    }

    /// Maps `[vaddr, vaddr + size)` at a fresh device address; frees the address
    /// again if the kernel refuses.
    ///
    /// # Safety
    ///
    /// As for [`vfio_ioctl::iommu_map_dma`]: the memory stays allocated and out
    /// of reach of safe code until [`Domain::unmap`] of the result succeeds, or
    /// is leaked.
    #[allow(unsafe_code)]
    unsafe fn map(
        &self,
        vaddr: usize,
        size: u64,
        align: u64,
        direction: Direction,
    ) -> Result<u64, DmaError> {
        let iova = self.alloc_iova(size, align)?;
        let mut flags = 0;
        if direction.device_reads() {
            flags |= VFIO_DMA_MAP_FLAG_READ;
        }
        if direction.device_writes() {
            flags |= VFIO_DMA_MAP_FLAG_WRITE;
        }
        // SAFETY: this function's caller upholds `iommu_map_dma`'s contract
        // for the range; `iova` is fresh from the allocator, inside the mask
        // and the IOMMU's ranges.
        let mapped =
            unsafe { vfio_ioctl::iommu_map_dma(self.container.as_fd(), vaddr, iova, size, flags) };
        if let Err(source) = mapped {
            self.free_iova(iova, size)?;
            return Err(map_failure(iova, size, source));
        }
        Ok(iova)
    }

    /// Unmaps `[iova, iova + size)`, checking the kernel unmapped all of it, and
    /// frees the addresses. On any failure the addresses stay reserved.
    ///
    /// Once the kernel has dropped every mapping of the container (its devices
    /// were revoked and given back), there is nothing left to unmap: the
    /// addresses are just freed.
    fn unmap(&self, iova: u64, size: u64) -> Result<(), DmaError> {
        if self.container.mappings_gone() {
            return self.free_iova(iova, size);
        }
        let unmapped = match vfio_ioctl::iommu_unmap_dma(self.container.as_fd(), iova, size) {
            Ok(unmapped) => unmapped,
            // Given back in the meantime.
            Err(_) if self.container.mappings_gone() => return self.free_iova(iova, size),
            Err(source) => return Err(DmaError::Unmap { iova, size, source }),
        };
        if unmapped != size && self.container.mappings_gone() {
            return self.free_iova(iova, size);
        }
        if unmapped != size {
            return Err(DmaError::PartialUnmap {
                iova,
                expected: size,
                unmapped,
            });
        }
        self.free_iova(iova, size)
    }
}

impl DmaBackend for Domain {
    fn mask(&self) -> DmaMask {
        self.mask
    }

    fn alloc(&self, size: usize, huge: bool) -> Result<Allocation, DmaError> {
        if size == 0 {
            return Err(DmaError::Empty);
        }
        let page = self.page_size();
        let memory = alloc_memory(size, huge, page)?;
        let align = if memory.is_huge() {
            HUGE_PAGE_SIZE
        } else {
            page
        } as u64;
        // SAFETY: `memory` is fresh and goes into the `Allocation` returned,
        // whose holder (`DmaBuffer`) calls `free` (which unmaps) before it unmaps
        // the memory, and leaks the memory when `free` fails; until then the
        // CPU reaches it only through atomic `DmaRegion` accesses or the
        // `unsafe` CPU-owned state.
        #[allow(unsafe_code)]
        let device_addr = unsafe {
            self.map(
                memory.addr(),
                memory.len() as u64,
                align,
                Direction::Bidirectional,
            )
        }?;
        Ok(Allocation {
            memory,
            device_addr,
            handle: 0,
            keep: false,
        })
    }

    fn free(&self, allocation: &Allocation) -> Result<(), DmaError> {
        self.unmap(allocation.device_addr, allocation.memory.len() as u64)
    }

    #[allow(unsafe_code)]
    unsafe fn map_user(
        &self,
        addr: usize,
        len: usize,
        direction: Direction,
    ) -> Result<UserMapping, DmaError> {
        let page = self.page_size();
        let (first_page, span) = page_span(addr, len, page)?;
        let span = span as u64;
        // SAFETY: the caller of `map_user` keeps `[addr, addr + len)` allocated
        // and out of safe code's reach until `unmap_user` succeeds; the whole
        // pages around it are what the IOMMU maps (the rest of those pages is
        // the caller's to share, as `DmaMapping` documents).
        let iova = unsafe { self.map(first_page, span, page as u64, direction) }?;
        Ok(UserMapping {
            sg: SgList::One(SgEntry {
                device_addr: iova + (addr - first_page) as u64,
                len,
            }),
            handle: iova,
            mapped_len: span,
            bounced: false,
        })
    }

    fn unmap_user(&self, mapping: &UserMapping) -> Result<(), DmaError> {
        self.unmap(mapping.handle, mapping.mapped_len)
    }
}
