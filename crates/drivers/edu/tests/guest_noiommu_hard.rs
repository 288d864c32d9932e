//! The usrdma module's hard cases, in the boots without an IOMMU: races the
//! module must win (from C, `kmod/usrdma/test/usrdma_hard.c`: unbind against
//! a copy in progress, RESET against BAR reads, INTx at release, late writes
//! to revoked mappings) and the
//! errors a driver author meets for memory the module will not pin and for
//! buffers larger than the kernel can give.

use std::os::fd::AsRawFd;
use std::process::Command;

use usrdrv::Device;
use usrdrv::dma::{Direction, DmaError, DmaMask};
use usrdrv::pci::{PciAddress, Sysfs};
use usrdrv::usrdma::{USRDMA_DRIVER, UsrdmaError};
use usrdrv_edu::DMA_MASK_BITS;

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{edu_address, open, pattern};

const PAGE: usize = 4096;

/// Runs `usrdma-hard CASE ADDR` and checks that every check in it passed.
fn hard(case: &str, address: PciAddress) -> String {
    let out = Command::new("usrdma-hard")
        .args([case, &address.to_string()])
        .output()
        .expect("usrdma-hard (built with the module) is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "usrdma-hard {case} failed:\n{said}");
    assert!(said.contains("PASSED: 0 failure(s)"), "{said}");
    said
}

/// The error under a `DmaError` (its source), as a `UsrdmaError`.
fn usrdma_cause(err: &DmaError) -> Option<&UsrdmaError> {
    let source = std::error::Error::source(err)?;
    let io = source.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<UsrdmaError>()
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn unbind_waits_for_an_ioctl_that_copies_a_bounce_buffer() {
    let said = hard("remove-wait", edu_address());
    assert!(
        said.contains("SYNC: unbind waits while the ioctl copies"),
        "{said}"
    );
    assert!(
        said.contains("UNMAP_USER: unbind waits while the ioctl copies"),
        "{said}"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn after_revocation_each_mapping_reads_all_ones_from_its_own_page() {
    let said = hard("dead-page", edu_address());
    assert!(
        said.contains("the other mapping of the buffer still reads all-ones"),
        "{said}"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn release_leaves_intx_masked_with_no_handler() {
    let said = hard("intx-masked", edu_address());
    assert!(said.contains("INTx left masked after release"), "{said}");
}

/// The NVMe controller's address (class 01:08:02), bound to usrdma.
fn nvme_on_usrdma() -> PciAddress {
    let found = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("list PCI devices")
        .flatten()
        .find(|d| {
            std::fs::read_to_string(d.path().join("class")).is_ok_and(|c| c.trim() == "0x010802")
        })
        .expect("the VM has an NVMe controller");
    let address: PciAddress = found
        .file_name()
        .to_string_lossy()
        .parse()
        .expect("a PCI address");
    Sysfs::system()
        .bind(address, USRDMA_DRIVER)
        .expect("bind the NVMe controller to usrdma");
    address
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn reset_with_a_bar_mapped_keeps_reads_away_from_the_device_until_it_is_over() {
    let address = nvme_on_usrdma();
    let result = std::panic::catch_unwind(|| hard("reset-bars", address));
    // The NVMe suites expect the kernel's driver.
    Sysfs::system()
        .bind(address, "nvme")
        .expect("give the controller back to nvme");
    let said = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(
        said.contains("no read reached the device mid-reset: 0 of"),
        "{said}"
    );
}

/// A `len`-byte shared mapping of a new file in the directory `dir`, and the file.
fn shared_file(dir: &str, name: &str, len: usize) -> (std::fs::File, *mut u8) {
    let path = format!("{dir}/{name}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    file.set_len(len as u64).expect("size the file");
    map_shared(&file, len)
}

fn map_shared(file: &std::fs::File, len: usize) -> (std::fs::File, *mut u8) {
    // SAFETY: a new shared mapping of a file this test owns; nothing else
    // maps that address range.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    (file.try_clone().expect("dup the file"), p.cast())
}

/// Maps `len` bytes at `p` for the device to write, and has edu write them.
fn device_writes(edu: &usrdrv_edu::Edu, p: *mut u8, len: usize) -> Result<(), DmaError> {
    // SAFETY: `p` is a live mapping of `len` bytes that only this test uses,
    // borrowed for this call.
    let memory = unsafe { std::slice::from_raw_parts_mut(p, len) };
    // edu moves at most 4095 bytes at a time; the mapping spans two pages.
    let moved = 2048;
    let at = PAGE - 1024;
    let data = pattern(moved, 9);
    let source = edu.device().alloc_dma(moved).expect("a source buffer");
    source.write_bytes(0, &data).expect("fill the source");
    edu.buffer_to_window(&source, 0, 0, moved)
        .expect("to edu's window");
    edu.device().with_dma(
        &mut memory[at..at + moved],
        Direction::FromDevice,
        |mapping| {
            edu.window_to_mapping(0, mapping)
                .expect("from edu's window");
        },
    )?;
    assert!(
        memory[at..at + moved] == data[..],
        "the device's bytes arrived"
    );
    Ok(())
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn shared_file_mappings_are_refused_with_a_typed_error_and_memfd_and_tmpfs_work() {
    let edu = open();
    let len = 2 * PAGE;

    // ramfs: page cache of a file system that is not shmem (the guest's root
    // is an initramfs, so a file system of its own is mounted here).
    let dir = "/tmp/usrdrv-ramfs";
    std::fs::create_dir_all(dir).expect("mkdir");
    let status = Command::new("mount")
        .args(["-t", "ramfs", "ramfs", dir])
        .status()
        .expect("mount");
    assert!(status.success(), "mount ramfs");
    let (file, p) = shared_file(dir, "data", len);
    let err = device_writes(&edu, p, len).expect_err("a shared ramfs mapping is refused");
    let cause = usrdma_cause(&err);
    assert!(
        matches!(cause, Some(UsrdmaError::NotPinnable { len: 2048, .. })),
        "{err:?}"
    );
    let text = format!("{err}: {}", cause.expect("a cause"));
    assert!(text.contains("memfd") && text.contains("hugetlb"), "{text}");
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(p.cast(), len) };
    drop(file);

    // A private mapping of the same kind of file is copied on write: allowed.
    let path = format!("{dir}/private");
    std::fs::write(&path, vec![0u8; len]).expect("write the file");
    let private = std::fs::File::open(&path).expect("open");
    // SAFETY: a new private mapping of a file this test owns.
    let q = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            private.as_raw_fd(),
            0,
        )
    };
    assert_ne!(q, libc::MAP_FAILED);
    device_writes(&edu, q.cast(), len).expect("a private file mapping is mapped");
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(q, len) };
    drop(private);
    let _ = Command::new("umount").arg(dir).status();

    // memfd (shmem) keeps working.
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"usrdrv-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let memfd: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    memfd.set_len(len as u64).expect("size the memfd");
    let (_memfd, m) = map_shared(&memfd, len);
    device_writes(&edu, m, len).expect("a shared memfd mapping is mapped");
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(m.cast(), len) };

    // So does a shared mapping of a file on tmpfs.
    let dir = "/tmp/usrdrv-tmpfs";
    std::fs::create_dir_all(dir).expect("mkdir");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", dir])
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    let (tmp, t) = shared_file(dir, "data", len);
    device_writes(&edu, t, len).expect("a shared tmpfs mapping is mapped");
    // SAFETY: the mapping made above, unused from here on.
    unsafe { libc::munmap(t.cast(), len) };
    drop(tmp);
    let _ = Command::new("umount").arg(dir).status();
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn buffers_up_to_the_reported_limit_work_and_one_page_more_says_what_to_do() {
    let address = edu_address();
    let device = Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
    let max = device
        .usrdma()
        .expect("a usrdma device")
        .max_buffer_size()
        .expect("the module reports its limit (ABI 5)");
    // No CMA on Debian's kernels: one block of the page allocator, 4 MiB.
    assert_eq!(max, 4 << 20, "the largest coherent buffer here");
    let len = usize::try_from(max).unwrap();
    let buffer = device
        .alloc_dma(len)
        .expect("a buffer of the reported limit is allocated");
    buffer.write_bytes(len - 4, b"last").unwrap();
    let mut got = [0u8; 4];
    buffer.read_bytes(len - 4, &mut got).unwrap();
    assert_eq!(&got, b"last");
    drop(buffer);

    let Err(err) = device.alloc_dma(len + PAGE) else {
        panic!("a buffer one page past the limit was allocated");
    };
    let cause = usrdma_cause(&err);
    assert!(
        matches!(cause, Some(UsrdmaError::BufferTooLarge { max: m, .. }) if *m == max),
        "{err:?}"
    );
    let text = cause.expect("a cause").to_string();
    assert!(
        text.contains("map_dma") && text.contains("hugetlb") && text.contains("cma="),
        "{text}"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn the_quarantine_shows_in_the_stats_and_in_usrdrv_info() {
    use usrdrv::usrdma::listing;
    let address = edu_address();
    let sysfs = Sysfs::system();
    let before = listing::stats(&sysfs, address)
        .unwrap()
        .quarantine
        .expect("the module reports the quarantine");
    // edu cannot be reset: what a killed owner leaves is kept for the grace
    // period (edu_hold holds a 1 MiB buffer and a mapping mid-transfer),
    // made 10 s here so that the two `usrdrv info` runs see it.
    let grace = "/sys/module/usrdma/parameters/quarantine_ms";
    /// Puts the default grace back, however the test ends.
    struct Default1000(&'static str);
    impl Drop for Default1000 {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, "1000");
        }
    }
    let restore = Default1000(grace);
    std::fs::write(grace, "10000").expect("set quarantine_ms");
    let mut child = Command::new("edu_hold")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("edu_hold (an example of usrdrv-edu) is in the VM's PATH");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("edu_hold says it holds");
    assert!(line.starts_with("holding"), "edu_hold said {line:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let during = listing::stats(&sysfs, address)
        .unwrap()
        .quarantine
        .expect("the module reports the quarantine");
    assert!(
        during.buffers > before.buffers && during.bytes >= before.bytes + (1 << 20),
        "{before:?} -> {during:?}"
    );
    let out = Command::new("usrdrv")
        .args(["info", &address.to_string(), "--json"])
        .output()
        .expect("usrdrv is in the VM's PATH");
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let q = &info["usrdma"]["stats"]["quarantine"];
    assert_eq!(q["buffers"], during.buffers, "{info}");
    assert_eq!(q["bytes"], during.bytes, "{info}");
    let text = Command::new("usrdrv")
        .args(["info", &address.to_string()])
        .output()
        .expect("usrdrv");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("kept from released owners"), "{text}");
    // The grace (back to the default, 1 s) ends it.
    drop(restore);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = listing::stats(&sysfs, address).unwrap().quarantine.unwrap();
    assert_eq!(after.buffers, 0, "{after:?}");
}
