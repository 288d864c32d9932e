//! edu tests of what only the usrdma backend does, in the boot without an
//! IOMMU: device addresses are physical, so the DMA mask decides what the
//! device can reach; persistent buffers; the module's clean-up when a process
//! dies or the module is unloaded; a fuzzer against the module's ioctls; and
//! the errors a driver author meets.

use std::io::BufRead;
use std::process::{Command, Stdio};

use usrdrv::dma::{Backing, Direction, DmaError, DmaMask};
use usrdrv::pci::{PciAddress, Sysfs};
use usrdrv::usrdma::{USRDMA_DRIVER, UsrdmaError};
use usrdrv::{Backend, Device, Error};
use usrdrv_edu::{DMA_MASK_BITS, Edu};

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{edu_address, open, pattern, usrdma_stat as stat};

const MASK_LIMIT: u64 = 1 << DMA_MASK_BITS;

/// The names in the module's `usrdma_buffers` attribute for `address`.
fn buffer_names(address: PciAddress) -> Vec<String> {
    let path = format!("/sys/bus/pci/devices/{address}/usrdma_buffers");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// A field of /proc/meminfo, in KiB.
fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("read /proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/meminfo"))
}

/// MemFree, in KiB.
fn mem_free_kib() -> u64 {
    meminfo_kib("MemFree")
}

/// SUnreclaim (slab memory that cannot be reclaimed), in KiB.
fn unreclaimable_slab_kib() -> u64 {
    meminfo_kib("SUnreclaim")
}

/// The kernel log so far.
fn kernel_log() -> String {
    let out = Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kernel log lines that mean the module misbehaved.
fn complaints(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            ["WARNING", "BUG", "Oops", "usercopy", "leak", "Call Trace"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect()
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn edu_is_driven_through_usrdma_here() {
    let edu = open();
    assert_eq!(edu.device().backend(), Backend::Usrdma);
    assert!(edu.device().vfio().is_none());
    let usrdma = edu.device().usrdma().expect("a usrdma device");
    assert_eq!(usrdma.dma_mask_bits().unwrap(), DMA_MASK_BITS);
    assert_eq!(
        Sysfs::system()
            .driver(edu.device().address())
            .unwrap()
            .as_deref(),
        Some(USRDMA_DRIVER)
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn every_device_address_is_below_the_mask_and_caller_memory_is_bounced_or_pinned() {
    let edu = open();
    let address = edu.device().address();
    for size in [1, 4096, 65536, 1 << 20] {
        let buffer = edu.device().alloc_dma(size).unwrap();
        assert!(buffer.device_addr() + buffer.len() as u64 <= MASK_LIMIT);
        assert_eq!(buffer.backing(), Backing::Coherent);
    }
    let pool = edu.device().dma_pool(512, 64).unwrap();
    assert!(pool.alloc().unwrap().device_addr() + 512 <= MASK_LIMIT);

    // Caller memory: wherever it lies, the device sees addresses below the
    // mask, and the data arrives (through a bounce buffer when it must).
    let pinned_before = stat(address, "pinned_pages");
    let data = pattern(4000, 5);
    let mapping = edu
        .device()
        .map_dma(data.clone(), Direction::ToDevice)
        .unwrap();
    for entry in mapping.sg_list() {
        assert!(
            entry.device_addr + entry.len as u64 <= MASK_LIMIT,
            "{entry:?}"
        );
    }
    assert_eq!(
        stat(address, "user_mappings"),
        1,
        "the module counts the mapping"
    );
    if !mapping.is_bounced() {
        assert!(stat(address, "pinned_pages") > pinned_before);
    }
    edu.mapping_to_window(&mapping, 0).unwrap();
    let mut incoming = vec![0u8; 4000];
    edu.device()
        .with_dma(&mut incoming[..], Direction::FromDevice, |back| {
            edu.window_to_mapping(0, back)
        })
        .unwrap()
        .unwrap();
    assert!(incoming == data, "the data went through");
    drop(mapping);
    assert_eq!(stat(address, "user_mappings"), 0);
    assert_eq!(stat(address, "pinned_pages"), pinned_before);

    // A device that drives 64 bits reaches every page: nothing is bounced.
    // (The pool holds the device open too: one opener at a time.)
    drop(pool);
    drop(edu);
    let wide = Device::open(address, DmaMask::new(64).unwrap()).unwrap();
    let memory = vec![1u8; 3 * 4096];
    let mapping = wide.map_dma(memory, Direction::Bidirectional).unwrap();
    assert!(!mapping.is_bounced());
    assert_eq!(mapping.len(), 3 * 4096);
    assert!(stat(address, "pinned_pages") >= pinned_before + 3);
    mapping.unmap().unwrap();
    assert_eq!(stat(address, "pinned_pages"), pinned_before);
}

/// The physical addresses of the `n` pages from `addr` (page-aligned); root
/// reads the frame numbers in /proc/self/pagemap.
fn physical(addr: usize, n: usize) -> Vec<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").expect("open pagemap");
    pagemap
        .seek(SeekFrom::Start((addr / PAGE * 8) as u64))
        .expect("seek pagemap");
    let mut entries = vec![0u8; n * 8];
    pagemap.read_exact(&mut entries).expect("read pagemap");
    entries
        .chunks_exact(8)
        .map(|e| {
            let entry = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            assert!(entry & (1 << 63) != 0, "the page is present");
            (entry & ((1 << 55) - 1)) * PAGE as u64
        })
        .collect()
}

const PAGE: usize = 4096;
const CHUNK: usize = 32 << 20;

/// Touched memory with a page above the DMA mask in it.
struct Touched {
    /// 32 MiB chunks of bytes 0x11.
    chunks: Vec<Vec<u8>>,
    /// The chunk and offset of a page above the mask.
    high: (usize, usize),
    /// The chunk and offset of a page below it, if one was seen.
    low: Option<(usize, usize)>,
}

/// Touches memory in 32 MiB chunks until one page lies above the DMA mask
/// (at most 512 MiB of the 1 GiB guest).
fn memory_above_the_mask() -> Touched {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut low = None;
    while chunks.len() < 16 {
        let chunk = vec![0x11u8; CHUNK];
        let base = chunk.as_ptr() as usize;
        let first = base.next_multiple_of(PAGE) - base;
        let n = (CHUNK - first) / PAGE - 1;
        let phys = physical(base + first, n);
        let index = chunks.len();
        chunks.push(chunk);
        if low.is_none()
            && let Some(k) = phys.iter().position(|&p| p + PAGE as u64 <= MASK_LIMIT)
        {
            low = Some((index, first + k * PAGE));
        }
        if let Some(k) = phys.iter().position(|&p| p >= MASK_LIMIT) {
            return Touched {
                chunks,
                high: (index, first + k * PAGE),
                low,
            };
        }
    }
    panic!("no page above 2^28 in 512 MiB of touched memory");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn memory_the_device_cannot_reach_is_bounced_and_arrives_at_the_sync_points() {
    let edu = open();
    let Touched {
        mut chunks,
        high: (at, high),
        low,
    } = memory_above_the_mask();

    // The device writes into a page it cannot reach: through a bounce buffer,
    // copied back at sync_for_cpu (window_to_mapping calls it).
    let data = pattern(PAGE - 96, 3);
    let source = edu.device().alloc_dma(PAGE).unwrap();
    source.write_bytes(0, &data).unwrap();
    edu.buffer_to_window(&source, 0, 0, data.len()).unwrap();
    edu.device()
        .with_dma(
            &mut chunks[at][high + 64..high + 64 + data.len()],
            Direction::FromDevice,
            |mapping| {
                assert!(mapping.is_bounced(), "a page above the mask is bounced");
                for entry in mapping.sg_list() {
                    assert!(
                        entry.device_addr + entry.len as u64 <= MASK_LIMIT,
                        "{entry:?}"
                    );
                }
                edu.window_to_mapping(0, mapping).unwrap();
            },
        )
        .unwrap();
    let memory = &mut chunks[at];
    assert!(
        memory[high + 64..high + 64 + data.len()] == data[..],
        "the device's bytes arrived"
    );
    assert!(
        memory[high..high + 64].iter().all(|b| *b == 0x11),
        "nothing before the range changed"
    );

    // And the other way: the device reads bytes the CPU wrote to such a page.
    let outgoing = pattern(1000, 77);
    memory[high + 2000..high + 3000].copy_from_slice(&outgoing);
    edu.device()
        .with_dma_to_device(&memory[high + 2000..high + 3000], |mapping| {
            assert!(mapping.is_bounced());
            edu.mapping_to_window(mapping, 100).unwrap();
        })
        .unwrap();
    let sink = edu.device().alloc_dma(PAGE).unwrap();
    edu.window_to_buffer(100, &sink, 0, 1000).unwrap();
    let mut got = vec![0u8; 1000];
    sink.read_bytes(0, &mut got).unwrap();
    assert!(got == outgoing, "the device read the CPU's bytes");

    // A page the device can reach is pinned and mapped in place.
    match low {
        Some((index, offset)) => {
            let page = &chunks[index][offset..offset + PAGE];
            edu.device()
                .with_dma_to_device(page, |mapping| {
                    assert!(!mapping.is_bounced());
                    assert_eq!(
                        mapping.sg_list()[0].device_addr,
                        physical(page.as_ptr() as usize, 1)[0],
                        "without an IOMMU the device address is the physical one"
                    );
                })
                .unwrap();
        }
        None => println!("no touched page lies below 2^28 here: only bouncing was seen"),
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_killed_process_loses_its_buffers_and_pins_but_persistent_ones_survive() {
    let address = edu_address();
    let pinned_before = stat(address, "pinned_pages");
    let bounce_before = stat(address, "bounce_bytes");
    let buffers_before = stat(address, "buffers");
    let bytes_before = stat(address, "buffer_bytes");
    let mut child = Command::new("edu_hold")
        .args(["--persistent", "keep-me"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("edu_hold (an example of usrdrv-edu) is in the VM's PATH");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("holding"), "edu_hold said {line:?}");
    assert_eq!(stat(address, "buffers"), buffers_before + 2);
    assert_eq!(stat(address, "user_mappings"), 1);
    assert!(
        stat(address, "pinned_pages") > pinned_before
            || stat(address, "bounce_bytes") > bounce_before,
        "its mapping holds pages or a bounce buffer"
    );
    child.kill().unwrap(); // SIGKILL mid-transfer
    child.wait().unwrap();

    assert_eq!(stat(address, "user_mappings"), 0);
    assert_eq!(stat(address, "pinned_pages"), pinned_before);
    assert_eq!(stat(address, "bounce_bytes"), bounce_before);
    assert_eq!(stat(address, "buffers"), buffers_before + 1);
    assert_eq!(buffer_names(address), ["keep-me"]);
    assert_eq!(
        stat(address, "buffer_bytes"),
        bytes_before + 8192,
        "its 1 MiB buffer is freed, the 8 KiB persistent one kept"
    );

    // A new process (this one) maps the persistent buffer by name.
    let edu = Edu::open(address).unwrap();
    let kept = edu.device().attach_persistent("keep-me").unwrap();
    let mut got = [0u8; 18];
    kept.read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"persistent:keep-me");
    assert!(kept.device_addr() + kept.len() as u64 <= MASK_LIMIT);
    // Dropping the handle leaves it; freeing by name removes it.
    drop(kept);
    assert_eq!(buffer_names(address), ["keep-me"]);
    edu.device().free_persistent("keep-me").unwrap();
    assert!(buffer_names(address).is_empty());
    assert!(matches!(
        edu.device().attach_persistent("keep-me"),
        Err(DmaError::NoSuchName { .. })
    ));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn unloading_the_module_frees_persistent_buffers() {
    let address = edu_address();
    // 64 MiB in persistent buffers: enough to see in MemFree, whose noise
    // between two reads a moment apart is far smaller.
    // (A 32-bit mask: below 2^28 the kernel rarely has 64 MiB to spare.)
    {
        let device = Device::open(address, DmaMask::new(32).unwrap()).unwrap();
        for i in 0..64 {
            device
                .alloc_persistent(&format!("left-behind-{i}"), 1 << 20)
                .unwrap();
        }
    }
    assert_eq!(buffer_names(address).len(), 64);
    assert_eq!(stat(address, "buffer_bytes"), 64 << 20);
    let free_before = mem_free_kib();
    let rmmod = Command::new("rmmod").arg("usrdma").status().unwrap();
    assert!(rmmod.success(), "rmmod with persistent buffers left");
    assert!(!std::path::Path::new("/sys/bus/pci/drivers/usrdma").exists());
    let free_after = mem_free_kib();
    assert!(
        free_after >= free_before + (56 << 10),
        "MemFree {free_before} KiB before unload, {free_after} KiB after: the 64 MiB were not freed"
    );
    let insmod = Command::new("insmod")
        .arg("/lib/modules/usrdma.ko")
        .status()
        .unwrap();
    assert!(insmod.success());
    // edu's driver_override still names usrdma: the new module binds it at once.
    assert_eq!(
        Sysfs::system().driver(address).unwrap().as_deref(),
        Some(USRDMA_DRIVER)
    );
    assert!(
        buffer_names(address).is_empty(),
        "nothing survives an unload"
    );
    // The device comes back for the next user.
    assert_eq!(open().identification().unwrap(), (1, 0));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_hundred_thousand_random_ioctls_leave_no_trace() {
    let address = edu_address();
    let log_before = kernel_log();
    let (free_before, slab_before) = (mem_free_kib(), unreclaimable_slab_kib());
    let out = Command::new("usrdma-fuzz")
        .args([address.to_string(), "100000".into(), "1".into()])
        .output()
        .expect("usrdma-fuzz (built with the module) is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "usrdma-fuzz failed: {out:?}");
    assert!(said.contains("100000 ioctls"), "{said}");
    let log_after = kernel_log();
    let new = log_after.strip_prefix(&log_before).unwrap_or(&log_after);
    assert!(complaints(new).is_empty(), "the kernel complained:\n{new}");
    assert_eq!(stat(address, "pinned_pages"), 0);
    assert_eq!(stat(address, "user_mappings"), 0);
    assert_eq!(stat(address, "bounce_bytes"), 0);
    assert_eq!(stat(address, "buffers"), 0);
    assert_eq!(stat(address, "buffer_bytes"), 0);
    assert_eq!(stat(address, "irqs"), 0);
    // The kernel's own view, coarsely: MemFree moves by tens of MiB between
    // identical fuzzer runs here (reclaim, per-CPU lists), so only a large
    // leak shows in it; leaked module structures would show in the slab.
    let (free_after, slab_after) = (mem_free_kib(), unreclaimable_slab_kib());
    assert!(
        free_after + (64 << 10) >= free_before,
        "MemFree {free_before} KiB before the fuzzer, {free_after} KiB after: pages leaked?"
    );
    assert!(
        slab_after < slab_before + 2048,
        "unreclaimable slab {slab_before} KiB before, {slab_after} KiB after: objects leaked?"
    );
    // And the device still works.
    let edu = open();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    buffer.write_bytes(0, b"after fuzz").unwrap();
    edu.buffer_to_window(&buffer, 0, 0, 10).unwrap();
    edu.window_to_buffer(0, &buffer, 100, 10).unwrap();
    let mut got = [0u8; 10];
    buffer.read_bytes(100, &mut got).unwrap();
    assert_eq!(&got, b"after fuzz");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn bad_input_gets_typed_errors_that_say_what_to_do() {
    let address = edu_address();
    let sysfs = Sysfs::system();
    let mask = DmaMask::new(DMA_MASK_BITS).unwrap();

    // A device on another driver.
    let nvme = sysfs.find(0x1b36, 0x0010).unwrap()[0];
    match Device::open_with(Backend::Usrdma, nvme, mask) {
        Err(Error::Usrdma(err @ UsrdmaError::NotBound { .. })) => {
            assert!(err.to_string().contains("--driver usrdma"), "{err}");
        }
        other => panic!("expected NotBound, got {other:?}"),
    }

    // One opener at a time.
    let first = Device::open(address, mask).unwrap();
    match Device::open(address, mask) {
        Err(Error::Usrdma(err @ UsrdmaError::Busy { .. })) => {
            assert!(err.to_string().contains("one opener"), "{err}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }

    // Names: too long, or taken (by a persistent buffer of any process).
    let names = first.named_buffers().unwrap();
    assert!(matches!(
        names.alloc(&"x".repeat(32), 4096),
        Err(DmaError::BadName { .. })
    ));
    first.alloc_persistent("taken", 4096).unwrap();
    match names.alloc("taken", 4096) {
        Err(err @ DmaError::NameTaken { .. }) => {
            assert!(err.to_string().contains("pick another name"), "{err}")
        }
        other => panic!("expected NameTaken, got {other:?}"),
    }
    first.free_persistent("taken").unwrap();
    drop(names);
    drop(first);

    // A mask the platform cannot serve at all, and one too small for the size.
    match Device::open(address, DmaMask::new(16).unwrap()) {
        Err(Error::Usrdma(err @ UsrdmaError::BadMask { bits: 16 })) => {
            assert!(err.to_string().contains("16 bits"), "{err}");
        }
        other => panic!("expected BadMask, got {other:?}"),
    }
    // Below 2^24 there are 16 MiB in all: 4 MiB buffers (the largest the
    // kernel gives without CMA) run out by the fifth.
    let narrow = Device::open(address, DmaMask::new(24).unwrap()).unwrap();
    let mut held = Vec::new();
    let err = loop {
        match narrow.alloc_dma(4 << 20) {
            Ok(buffer) if held.len() < 4 => held.push(buffer),
            Ok(_) => panic!("more than 16 MiB of buffers below 2^24"),
            Err(err) => break err,
        }
    };
    match err {
        err @ DmaError::NoMemoryBelowMask { bits: 24, .. } => {
            assert!(err.to_string().contains("below 2^24"), "{err}");
        }
        other => panic!("expected NoMemoryBelowMask, got {other:?}"),
    }
    drop(held);
    drop(narrow);

    // Persistent buffers need usrdma; attaching another process's private
    // buffer is refused (covered by the kill test); no permission without root.
    let out = Command::new("edu_unprivileged")
        .args(["65534", "65536"])
        .output()
        .expect("edu_unprivileged (an example of usrdrv-edu) is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("open: error:"), "{said}");
    assert!(said.contains("CAP_SYS_RAWIO"), "{said}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn hugepage_requests_get_contiguous_coherent_memory() {
    let edu = open();
    let buffer = edu.device().alloc_dma_huge(3 << 20).unwrap();
    assert_eq!(buffer.backing(), Backing::Coherent);
    assert_eq!(buffer.len(), 3 << 20);
    assert!(buffer.device_addr() + buffer.len() as u64 <= MASK_LIMIT);
    buffer.write_bytes(buffer.len() - 3, b"end").unwrap();
    edu.buffer_to_window(&buffer, buffer.len() - 3, 10, 3)
        .unwrap();
    edu.window_to_buffer(10, &buffer, 0, 3).unwrap();
    let mut got = [0u8; 3];
    buffer.read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"end");
}

/// The device addresses in the module's `usrdma_buffers` attribute for `address`.
fn buffer_addrs(address: PciAddress) -> Vec<u64> {
    let path = format!("/sys/bus/pci/devices/{address}/usrdma_buffers");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .lines()
        .filter_map(|line| {
            let field = line.split_whitespace().nth(3)?;
            u64::from_str_radix(field.strip_prefix("0x")?, 16).ok()
        })
        .collect()
}

/// edu copies `data` into `buffer` (through its window, from a buffer of
/// its own) and the CPU reads it back.
fn dma_into(edu: &Edu, buffer: &usrdrv::dma::DmaRegion, data: &[u8]) {
    let source = edu.device().alloc_dma(4096).expect("a source buffer");
    source.write_bytes(0, data).expect("write the source");
    edu.buffer_to_window(&source, 0, 0, data.len())
        .expect("DMA into edu's window");
    edu.window_to_buffer(0, buffer, 0, data.len())
        .expect("DMA into the buffer");
    let mut got = vec![0u8; data.len()];
    buffer.read_bytes(0, &mut got).expect("read the buffer");
    assert!(got == data, "the device's bytes arrived");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn free_persistent_refuses_a_named_buffer_of_this_process_which_keeps_working() {
    let edu = open();
    let address = edu.device().address();
    let names = edu.device().named_buffers().unwrap();
    let rx = names.alloc("rx", 4096).unwrap();
    match edu.device().free_persistent("rx") {
        Err(err @ DmaError::NotPersistent { .. }) => {
            assert!(err.to_string().contains("not persistent"), "{err}");
        }
        other => panic!("expected NotPersistent, got {other:?}"),
    }
    assert!(buffer_names(address).contains(&"rx".to_owned()));
    dma_into(&edu, &rx, &pattern(1500, 41));
    drop(rx);
    names.free("rx").unwrap();
    assert!(!buffer_names(address).contains(&"rx".to_owned()));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn free_persistent_refuses_a_buffer_still_attached_here_and_frees_it_once_dropped() {
    let edu = open();
    let address = edu.device().address();
    let held = edu.device().alloc_persistent("held", 8192).unwrap();
    match edu.device().free_persistent("held") {
        Err(err @ DmaError::BufferInUse { .. }) => {
            assert!(err.to_string().contains("drop every handle"), "{err}");
        }
        other => panic!("expected BufferInUse, got {other:?}"),
    }
    // Refused, not freed: the device still reaches it.
    dma_into(&edu, &held, &pattern(2000, 42));
    drop(held);

    // Attached again (as a later process would), it is busy again.
    let again = edu.device().attach_persistent("held").unwrap();
    assert!(matches!(
        edu.device().free_persistent("held"),
        Err(DmaError::BufferInUse { .. })
    ));
    let mut got = vec![0u8; 2000];
    again.read_bytes(0, &mut got).unwrap();
    assert!(got == pattern(2000, 42), "the bytes survived the refusals");
    drop(again);
    edu.device().free_persistent("held").unwrap();
    assert!(!buffer_names(address).contains(&"held".to_owned()));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_stale_buffer_id_never_frees_the_buffer_that_reused_it() {
    // The sequence that once made the module free `fresh` under the device.
    let edu = open();
    let address = edu.device().address();
    let device = edu.device();
    let names = device.named_buffers().unwrap();
    let stale = names.alloc("rx", 4096).unwrap();
    let buffers_before = stat(address, "buffers");
    assert!(device.free_persistent("rx").is_err());
    let fresh = device.alloc_dma(4096).unwrap();
    names.free("rx").unwrap();
    drop(stale);
    assert_eq!(
        stat(address, "buffers"),
        buffers_before,
        "rx went, fresh stays"
    );
    assert!(
        buffer_addrs(address).contains(&fresh.device_addr()),
        "the module still has fresh at {:#x}",
        fresh.device_addr()
    );
    dma_into(&edu, &fresh, &pattern(3000, 43));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn the_module_refuses_stale_ids_and_frees_by_name_only_unmapped_persistent_buffers() {
    // Raw ioctls from C (kmod/usrdma/test/usrdma_test.c, `free`).
    let address = edu_address();
    let out = Command::new("usrdma-test")
        .args(["free", &address.to_string()])
        .output()
        .expect("usrdma-test (built with the module) is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "usrdma-test free failed:\n{said}");
    assert!(said.contains("PASSED: 0 failure(s)"), "{said}");
    assert!(said.contains("stale FREE"), "{said}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_waiter_polling_its_eventfd_and_the_node_is_told_of_an_unbind() {
    // Raw ioctls from C (kmod/usrdma/test/usrdma_test.c, `revoke-wait`): the
    // node hangs up and a semaphore eventfd gets one count, on every kernel.
    let address = edu_address();
    let out = Command::new("usrdma-test")
        .args(["revoke-wait", &address.to_string()])
        .output()
        .expect("usrdma-test (built with the module) is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "usrdma-test revoke-wait failed:\n{said}"
    );
    assert!(said.contains("PASSED: 0 failure(s)"), "{said}");
    assert!(said.contains("node revents"), "{said}");
    // The next test binds edu again (edu_address).
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn opening_a_device_without_an_iommu_taints_the_kernel_and_logs_who() {
    let address = edu_address();
    let device = Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
    let tainted: u64 = std::fs::read_to_string("/proc/sys/kernel/tainted")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(
        tainted & (1 << 6),
        0,
        "TAINT_USER ('U') is set: {tainted:#x}"
    );
    let log = Command::new("dmesg").output().expect("dmesg").stdout;
    let log = String::from_utf8_lossy(&log);
    let said = format!("usrdma {address}: opened for DMA without IOMMU isolation by ");
    let pid = format!(
        "(pid {}): the device can reach all memory",
        std::process::id()
    );
    assert!(
        log.lines().any(|l| l.contains(&said) && l.contains(&pid)),
        "the log names the device and this process:\n{log}"
    );
    drop(device);
}
