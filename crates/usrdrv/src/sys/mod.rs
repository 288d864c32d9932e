//! The only place in usrdrv that talks to the kernel through raw system calls:
//! VFIO ioctls and memory mappings. Everything here is wrapped in safe functions
//! whose arguments make misuse impossible, except where handing memory to the
//! device is the point (`usrdma_ioctl::map_user`): such functions are `unsafe`
//! with their contract stated. Every `unsafe` block says why it is sound. The
//! rest of the crate is `#![deny(unsafe_code)]`.

pub(crate) mod dead_memory;
pub(crate) mod dma_memory;
pub(crate) mod eventfd;
pub(crate) mod limits;
pub(crate) mod mmap;
pub(crate) mod usrdma_ioctl;
pub(crate) mod vfio_ioctl;
pub(crate) mod word;
pub(crate) mod word_access;
