//! The NVMe driver against QEMU's nvme in the usrdrv VM, checked against the
//! kernel's own nvme driver on the same controller: Identify agrees with
//! sysfs, data written by one is read back by the other, and errors carry
//! the specification's status names. Runs over VFIO in the IOMMU boot and,
//! unchanged, over usrdma in the other (`guest_noiommu_nvme.rs`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
use usrdrv::usrdma::USRDMA_DRIVER;
use usrdrv_nvme::{Controller, ControllerOptions, Namespace, NvmeError};

/// The disk the kernel's driver shows for namespace 1 of the controller,
/// found by its namespace ID (the kernel may name a controller's namespaces
/// in any order), once it opens; `None` while there is none.
fn disk() -> Option<String> {
    let blocks = std::fs::read_dir("/sys/block").ok()?;
    blocks
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("nvme"))
        .find(|name| {
            std::fs::read_to_string(format!("/sys/block/{name}/nsid"))
                .is_ok_and(|nsid| nsid.trim() == "1")
        })
        .filter(|name| std::fs::File::open(format!("/dev/{name}")).is_ok())
}

/// [`disk`], which must be there.
fn the_disk() -> String {
    disk().expect("the kernel's disk for namespace 1")
}
/// Where the tests write: the last 8 MiB of the 64 MiB disk, away from
/// what other tests put at its start.
const FIRST_BYTE: u64 = 56 << 20;

/// Namespace 2 of the controller: QEMU's `null-co` under its `blkdebug`
/// driver (the rig's `qemu.rs`). Reads return zeroes and writes are dropped;
/// once the namespace has seen a write, a read touching `READ_ERROR_LBA`
/// fails with EIO and a write touching `WRITE_ERROR_LBA` too (512-byte
/// blocks), real I/O errors under the controller.
const ERROR_NS: u32 = 2;
const READ_ERROR_LBA: u64 = 2048;
const WRITE_ERROR_LBA: u64 = 4096;
/// Namespace 3: `null-co` answering every command 100 ms late.
const SLOW_NS: u32 = 3;

fn nvme() -> PciAddress {
    Sysfs::system().find(0x1b36, 0x0010).expect("scan sysfs")[0]
}

/// The driver the controller is used through in this boot.
fn driver() -> &'static str {
    let iommu = std::fs::read_dir("/sys/kernel/iommu_groups").is_ok_and(|mut g| g.next().is_some());
    if iommu {
        VFIO_PCI_DRIVER
    } else {
        USRDMA_DRIVER
    }
}

/// Gives the controller to the kernel's nvme driver and waits until its disk
/// can be opened (the node appears a moment before the disk answers).
fn to_kernel(address: PciAddress) {
    Sysfs::system().bind(address, "nvme").expect("bind to nvme");
    let start = Instant::now();
    while disk().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the disk of namespace 1 opens"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` with the controller opened by usrdrv, then gives it back to the
/// kernel's driver, whatever `f` did.
fn with_usrdrv<T>(f: impl FnOnce(&mut Controller) -> T + std::panic::UnwindSafe) -> T {
    with_usrdrv_options(ControllerOptions::default(), f)
}

/// [`with_usrdrv`], with the controller set up as `options` say.
fn with_usrdrv_options<T>(
    options: ControllerOptions,
    f: impl FnOnce(&mut Controller) -> T + std::panic::UnwindSafe,
) -> T {
    let address = nvme();
    Sysfs::system()
        .bind(address, driver())
        .expect("bind to this boot's driver");
    let result = std::panic::catch_unwind(|| {
        let mut controller =
            Controller::open_with_options(address, options).expect("open the controller");
        f(&mut controller)
    });
    to_kernel(address);
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `len` bytes, different for every offset and seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9).wrapping_add(seed * 131) >> 7) as u8)
        .collect()
}

/// The kernel's view: `len` bytes of the disk at `at`.
fn kernel_read(at: u64, len: usize) -> Vec<u8> {
    let mut disk = std::fs::File::open(format!("/dev/{}", the_disk())).expect("open the disk");
    disk.seek(SeekFrom::Start(at)).expect("seek the disk");
    let mut data = vec![0u8; len];
    disk.read_exact(&mut data).expect("read the disk");
    data
}

/// Writes through the kernel and flushes it to the controller.
fn kernel_write(at: u64, data: &[u8]) {
    let mut disk = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/{}", the_disk()))
        .expect("open the disk");
    disk.seek(SeekFrom::Start(at)).expect("seek the disk");
    disk.write_all(data).expect("write the disk");
    disk.sync_all().expect("flush the disk");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn identify_matches_what_the_kernel_reports() {
    to_kernel(nvme());
    let sysfs = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/nvme/nvme0/{name}"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (model, serial, firmware) = (sysfs("model"), sysfs("serial"), sysfs("firmware_rev"));
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{}/size", the_disk()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (info, namespaces) = with_usrdrv(|c| (c.info().clone(), c.namespaces().unwrap()));
    assert_eq!(
        (
            info.model.as_str(),
            info.serial.as_str(),
            info.firmware.as_str()
        ),
        (model.as_str(), serial.as_str(), firmware.as_str())
    );
    assert_eq!(info.serial, "usrdrv-nvme0");
    // The disk, and the namespaces with injected errors and with latency.
    assert_eq!(namespaces.len(), 3, "{namespaces:?}");
    assert_eq!(namespaces[0].bytes(), sectors * 512);
    assert_eq!(
        (namespaces[1].id, namespaces[1].bytes()),
        (ERROR_NS, 16 << 20)
    );
    assert_eq!(
        (namespaces[2].id, namespaces[2].bytes()),
        (SLOW_NS, 16 << 20)
    );
}

/// Writes with usrdrv, at `FIRST_BYTE` on, one command per case: a block, a
/// page, two pages from an unaligned start, a PRP list, and the controller's
/// largest transfer. Returns what was written where.
fn cases(c: &Controller, ns: &Namespace) -> Vec<(u64, usize, usize)> {
    let block = ns.block_size;
    // (first byte on the disk, length, offset in the buffer)
    vec![
        (FIRST_BYTE, block, 0),
        (FIRST_BYTE + (64 << 10), 4096, 0),
        (FIRST_BYTE + (128 << 10), 4096, 2048),
        (FIRST_BYTE + (256 << 10), 5 * 4096 + block, 1024),
        (FIRST_BYTE + (1 << 20), c.max_transfer(), 0),
    ]
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn data_written_by_usrdrv_is_what_the_kernel_reads_and_back() {
    let written = with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let mut queue = c.io_queue(16).unwrap();
        let buffer = c.device().alloc_dma(c.max_transfer() + 8192).unwrap();
        let mut written = Vec::new();
        for (seed, (at, len, offset)) in cases(c, &ns).into_iter().enumerate() {
            let data = pattern(len, seed as u64);
            buffer.write_bytes(offset, &data).unwrap();
            let lba = at / ns.block_size as u64;
            queue
                .write_at(&ns, lba, ns.blocks_in(len), &buffer, offset)
                .unwrap_or_else(|e| panic!("write {len} bytes at buffer offset {offset}: {e}"));
            written.push((at, data));
        }
        queue.flush(&ns).unwrap();
        written
    });
    for (at, data) in &written {
        assert!(
            kernel_read(*at, data.len()) == *data,
            "the kernel reads what usrdrv wrote at {at:#x} ({} bytes)",
            data.len()
        );
    }
    // The other way: the kernel writes, usrdrv reads (into unaligned places).
    let theirs: Vec<(u64, Vec<u8>)> = written
        .iter()
        .enumerate()
        .map(|(i, (at, data))| (*at, pattern(data.len(), 100 + i as u64)))
        .collect();
    for (at, data) in &theirs {
        kernel_write(*at, data);
    }
    with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let mut queue = c.io_queue(16).unwrap();
        let buffer = c.device().alloc_dma(c.max_transfer() + 8192).unwrap();
        for ((at, data), (_, _, offset)) in theirs.iter().zip(cases(c, &ns)) {
            let lba = at / ns.block_size as u64;
            queue
                .read_at(&ns, lba, ns.blocks_in(data.len()), &buffer, offset)
                .unwrap();
            let mut got = vec![0u8; data.len()];
            buffer.read_bytes(offset, &mut got).unwrap();
            assert!(
                got == *data,
                "usrdrv reads what the kernel wrote at {at:#x}"
            );
        }
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn errors_carry_the_specifications_status() {
    with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let mut queue = c.io_queue(4).unwrap();
        let buffer = c.device().alloc_dma(4096).unwrap();
        let beyond = queue.read(&ns, ns.blocks, 1, &buffer).unwrap_err();
        assert!(
            matches!(&beyond, NvmeError::Command { status, .. } if status.name() == "LBA Out of Range"),
            "{beyond}"
        );
        let nowhere = Namespace { id: 0xffff, ..ns };
        let invalid = queue.read(&nowhere, 0, 1, &buffer).unwrap_err();
        assert!(
            matches!(&invalid, NvmeError::Command { status, .. } if status.name() == "Invalid Namespace or Format"),
            "{invalid}"
        );
        // The queue keeps working after errors.
        queue.read(&ns, 0, 1, &buffer).unwrap();

        // Write Zeroes and deallocate (QEMU offers both).
        assert!(c.info().oncs & 0b1100 == 0b1100, "{:#x}", c.info().oncs);
        let lba = FIRST_BYTE / ns.block_size as u64;
        buffer.write_bytes(0, &pattern(4096, 9)).unwrap();
        queue.write(&ns, lba, ns.blocks_in(4096), &buffer).unwrap();
        queue.write_zeroes(&ns, lba, ns.blocks_in(4096)).unwrap();
        buffer.fill(0, 4096, 0xee).unwrap();
        queue.read(&ns, lba, ns.blocks_in(4096), &buffer).unwrap();
        let mut got = vec![0u8; 4096];
        buffer.read_bytes(0, &mut got).unwrap();
        assert!(
            got.iter().all(|&b| b == 0),
            "Write Zeroes zeroed the blocks"
        );
        queue
            .deallocate(&ns, &[(lba, 8), (lba + 64, 16)])
            .expect("deallocate two ranges");
        assert!(matches!(
            queue.deallocate(&ns, &[]),
            Err(NvmeError::Transfer { .. })
        ));
        let too_big = queue
            .read(&ns, 0, ns.blocks_in(c.max_transfer()) + 1, &buffer)
            .unwrap_err();
        assert!(matches!(too_big, NvmeError::Transfer { .. }), "{too_big}");
        // Queues are given back: many more than the controller grants, one
        // after another.
        drop(queue);
        for _ in 0..=c.io_queue_count() {
            c.io_queue(2).unwrap();
        }
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn queued_commands_wrap_their_queues_many_times_on_several_threads() {
    use usrdrv_nvme::Op;
    const THREADS: u64 = 3;
    const COMMANDS: u64 = 200;
    with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let blocks = ns.blocks_in(4096);
        let lba_of = |thread: u64, i: u64| {
            (FIRST_BYTE + (thread * COMMANDS + i) * 4096) / ns.block_size as u64
        };
        // One queue polled, the others on their own MSI-X vectors.
        let queues: Vec<_> = (0..THREADS)
            .map(|i| {
                if i == 0 {
                    c.io_queue_for::<usrdrv::dma::PoolBuffer>(8).unwrap()
                } else {
                    c.io_queue_with_interrupts::<usrdrv::dma::PoolBuffer>(8)
                        .unwrap()
                }
            })
            .collect();
        assert!(!queues[0].uses_interrupts() && queues[1].uses_interrupts());
        let pools: Vec<_> = (0..THREADS)
            .map(|_| c.device().dma_pool(4096, 16).unwrap())
            .collect();
        std::thread::scope(|s| {
            for (thread, (mut queue, pool)) in queues.into_iter().zip(pools).enumerate() {
                let thread = thread as u64;
                s.spawn(move || {
                    // Writes, queued as deep as the queue goes (7), 200 of
                    // them on an 8-entry queue: it wraps 25 times.
                    let mut next = 0;
                    let mut done = 0;
                    while done < COMMANDS {
                        while next < COMMANDS && queue.in_flight() < queue.capacity() {
                            let buffer = pool.alloc().expect("a free chunk");
                            buffer
                                .write_bytes(0, &pattern(4096, thread * 1000 + next))
                                .unwrap();
                            queue
                                .submit(Op::Write, &ns, lba_of(thread, next), blocks, buffer, next)
                                .unwrap();
                            next += 1;
                        }
                        let finished = queue.wait().unwrap();
                        finished.result.unwrap();
                        done += 1;
                    }
                    // Read them back the same way and check each.
                    let (mut next, mut done) = (0, 0);
                    while done < COMMANDS {
                        while next < COMMANDS && queue.in_flight() < queue.capacity() {
                            let buffer = pool.alloc().expect("a free chunk");
                            queue
                                .submit(Op::Read, &ns, lba_of(thread, next), blocks, buffer, next)
                                .unwrap();
                            next += 1;
                        }
                        let finished = queue.wait().unwrap();
                        finished.result.unwrap();
                        let mut got = vec![0u8; 4096];
                        finished.buffer.read_bytes(0, &mut got).unwrap();
                        assert!(
                            got == pattern(4096, thread * 1000 + finished.tag),
                            "thread {thread}, command {}",
                            finished.tag
                        );
                        done += 1;
                    }
                    // A queue dropped with commands in flight ends them first.
                    for i in 0..queue.capacity() as u64 {
                        let buffer = pool.alloc().expect("a free chunk");
                        queue
                            .submit(Op::Read, &ns, lba_of(thread, i), blocks, buffer, i)
                            .unwrap();
                    }
                    drop(queue);
                });
            }
        });
        // The controller still works after all that.
        let mut queue = c.io_queue(2).unwrap();
        let buffer = c.device().alloc_dma(4096).unwrap();
        queue.read(&ns, lba_of(0, 5), blocks, &buffer).unwrap();
        let mut got = vec![0u8; 4096];
        buffer.read_bytes(0, &mut got).unwrap();
        assert!(got == pattern(4096, 5));
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_process_killed_mid_io_leaves_the_controller_to_the_next_one() {
    let address = nvme();
    Sysfs::system()
        .bind(address, driver())
        .expect("bind to this boot's driver");
    let mut perf = std::process::Command::new("usrdrv-nvme")
        .args([
            "perf",
            &address.to_string(),
            "--time",
            "30",
            "--queue-depth",
            "32",
        ])
        .args(["--pattern", "randread", "--io-size", "65536"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("usrdrv-nvme is in the VM's PATH");
    std::thread::sleep(Duration::from_millis(1500));
    perf.kill().unwrap();
    perf.wait().unwrap();
    // The next owner resets the controller at open and gets correct data.
    with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let mut queue = c.io_queue(4).unwrap();
        let buffer = c.device().alloc_dma(8192).unwrap();
        let data = pattern(8192, 77);
        buffer.write_bytes(0, &data).unwrap();
        let lba = FIRST_BYTE / ns.block_size as u64;
        queue.write(&ns, lba, ns.blocks_in(8192), &buffer).unwrap();
        buffer.fill(0, 8192, 0).unwrap();
        queue.read(&ns, lba, ns.blocks_in(8192), &buffer).unwrap();
        let mut got = vec![0u8; 8192];
        buffer.read_bytes(0, &mut got).unwrap();
        assert!(got == data, "the next owner reads what it wrote");
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn unbinding_with_io_in_flight_fails_every_command_promptly() {
    use usrdrv_nvme::Op;
    let address = nvme();
    Sysfs::system()
        .bind(address, driver())
        .expect("bind to this boot's driver");
    let mut c = Controller::open(address).unwrap();
    let ns = c.namespaces().unwrap()[0];
    let mut queue = c.io_queue(16).unwrap();
    let blocks = ns.blocks_in(65536);
    let unbind_at = std::sync::Arc::new(std::sync::OnceLock::new());
    let unbinder = {
        let unbind_at = std::sync::Arc::clone(&unbind_at);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let _ = unbind_at.set(Instant::now());
            std::fs::write(
                format!("/sys/bus/pci/devices/{address}/driver/unbind"),
                address.to_string(),
            )
        })
    };
    // Keep the queue full until the commands start failing.
    let mut tag = 0;
    let error = 'io: loop {
        while queue.in_flight() < queue.capacity() {
            let buffer = match c.device().alloc_dma(65536) {
                Ok(buffer) => buffer,
                Err(e) => break 'io NvmeError::Dma(e),
            };
            let lba = (tag % 64) * u64::from(blocks);
            if let Err(rejected) = queue.submit(Op::Read, &ns, lba, blocks, buffer, tag) {
                break 'io rejected.error;
            }
            tag += 1;
        }
        match queue.wait() {
            Ok(done) => {
                if let Err(e) = done.result {
                    break e;
                }
            }
            Err(e) => break e,
        }
        assert!(tag < 1_000_000, "the unbind never reached the driver");
    };
    let noticed = Instant::now();
    assert!(error.is_revoked(), "{error}");
    let since = noticed - *unbind_at.get().expect("the unbind started");
    assert!(
        since < Duration::from_secs(1),
        "noticed {since:?} after the unbind"
    );
    // Every later call says so too, and nothing hangs on the way out.
    let buffer = c.device().alloc_dma(4096);
    assert!(
        buffer.is_err()
            || queue
                .read(&ns, 0, 1, &buffer.unwrap())
                .unwrap_err()
                .is_revoked()
    );
    drop(queue);
    drop(c);
    unbinder.join().unwrap().expect("the unbind completes");
    to_kernel(address);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn sgl_transfers_reach_the_same_blocks_as_prp_ones() {
    with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let mut prp = c.io_queue(4).unwrap();
        let mut sgl = c.io_queue(4).unwrap();
        sgl.use_sgls(true).expect("QEMU's nvme supports SGLs");
        let buffer = c.device().alloc_dma(4 * 65536).unwrap();
        let lba = (FIRST_BYTE + (4 << 20)) / ns.block_size as u64;
        // Written with an SGL from an offset PRPs take too, read back with PRPs.
        let data = pattern(65536 + 512, 31);
        buffer.write_bytes(100, &data).unwrap();
        sgl.write_at(&ns, lba, ns.blocks_in(data.len()), &buffer, 100)
            .unwrap();
        prp.read_at(&ns, lba, ns.blocks_in(data.len()), &buffer, 65536 + 4)
            .unwrap();
        let mut got = vec![0u8; data.len()];
        buffer.read_bytes(65536 + 4, &mut got).unwrap();
        assert!(got == data, "PRP read of an SGL write");
        // And the other way, into an odd byte offset where the controller
        // allows any alignment (PRPs need 4-byte alignment).
        let offset = if sgl.sgls_any_alignment() {
            2 * 65536 + 1
        } else {
            2 * 65536 + 4
        };
        sgl.read_at(&ns, lba, ns.blocks_in(data.len()) - 1, &buffer, offset)
            .unwrap();
        let mut back = vec![0u8; data.len() - 512];
        buffer.read_bytes(offset, &mut back).unwrap();
        assert!(
            back == data[..data.len() - 512],
            "SGL read of the same blocks"
        );
        assert!(
            prp.read_at(&ns, lba, 1, &buffer, 2 * 65536 + 1).is_err(),
            "PRPs refuse an odd offset"
        );
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_command_past_its_deadline_is_aborted_then_reset_and_every_command_is_accounted_for() {
    use usrdrv_nvme::Op;
    // Namespace 3 answers 100 ms late, and QEMU's controller never aborts a
    // command (Abort completes with "not aborted"): a 10 ms deadline ends in
    // an Abort, then a controller reset, which ends the commands of every
    // queue. The same paths, with a controller that does abort, are checked
    // on the host against the NVMe model (`emulated_nvme.rs`).
    let written = pattern(4096, 77);
    let lba_byte = FIRST_BYTE + (4 << 20);
    kernel_write(lba_byte, &written);
    with_usrdrv(|c| {
        let namespaces = c.namespaces().unwrap();
        let disk = namespaces[0];
        let slow = *namespaces
            .iter()
            .find(|n| n.id == SLOW_NS)
            .expect("namespace 3");
        let mut polled = c.io_queue(8).unwrap();
        let mut irq = c.io_queue_with_interrupts(8).unwrap();
        let buffer = c.device().alloc_dma(4096).unwrap();
        // In flight on the other queue when the reset comes, with the
        // default deadline (10 s): ended by the reset, not timed out.
        for tag in 0..4u64 {
            let chunk = c.device().alloc_dma(4096).unwrap();
            irq.submit(Op::Read, &slow, tag * 8, slow.blocks_in(4096), chunk, tag)
                .map_err(|r| r.error)
                .unwrap();
        }
        c.set_command_timeout(Duration::from_millis(10));
        let start = Instant::now();
        let late = polled.read(&slow, 0, slow.blocks_in(4096), &buffer);
        let took = start.elapsed();
        assert!(
            matches!(&late, Err(NvmeError::Timeout { .. })),
            "{late:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(5), "reported after {took:?}");
        assert_eq!(
            (c.aborts(), c.resets()),
            (1, 1),
            "one Abort, then one reset"
        );
        c.set_command_timeout(Duration::from_secs(10));
        let mut ended = Vec::new();
        while irq.in_flight() > 0 {
            let done = irq.wait().unwrap();
            assert!(
                matches!(&done.result, Err(NvmeError::Reset { .. })),
                "command {}: {:?}",
                done.tag,
                done.result
            );
            ended.push(done.tag);
        }
        ended.sort_unstable();
        assert_eq!(ended, [0, 1, 2, 3], "every queued command came back");
        // Both queues work again, created anew in the reset controller: the
        // slow namespace answers in its own time, and the disk's data is
        // still what the kernel wrote.
        polled
            .read(&slow, 0, slow.blocks_in(4096), &buffer)
            .unwrap();
        for queue in [&mut polled, &mut irq] {
            buffer.fill(0, 4096, 0).unwrap();
            queue
                .read(
                    &disk,
                    lba_byte / disk.block_size as u64,
                    disk.blocks_in(4096),
                    &buffer,
                )
                .unwrap();
            let mut got = vec![0u8; 4096];
            buffer.read_bytes(0, &mut got).unwrap();
            assert_eq!(got, written);
        }
        assert_eq!(c.resets(), 1, "no reset with a sane deadline");
    });
    assert_eq!(kernel_read(lba_byte, 4096), written);
}

/// Writes then reads back `rounds` batches of `batch` 4 KiB commands on one
/// polled queue of `depth` entries, each batch queued with one `ring`;
/// checks every block read and returns the doorbell registers the queue
/// wrote.
fn batches_through_one_queue(
    c: &mut Controller,
    rounds: u64,
    batch: u64,
    depth: u16,
    seed: u64,
) -> u64 {
    use usrdrv_nvme::Op;
    let ns = c.namespaces().expect("identify the namespaces")[0];
    let blocks = ns.blocks_in(4096);
    let lba_of = |i: u64| (FIRST_BYTE + i * 4096) / ns.block_size as u64;
    let mut queue = c
        .io_queue_for::<usrdrv::dma::PoolBuffer>(depth)
        .expect("an I/O queue");
    let pool = c.device().dma_pool(4096, batch as usize).expect("a pool");
    for round in 0..rounds {
        for op in [Op::Write, Op::Read] {
            for i in 0..batch {
                let buffer = pool.alloc().expect("a free chunk");
                if op == Op::Write {
                    buffer
                        .write_bytes(0, &pattern(4096, seed + round * batch + i))
                        .expect("fill the chunk");
                }
                queue
                    .submit_deferred(op, &ns, lba_of(i), blocks, buffer, i)
                    .expect("queue the command");
            }
            queue.ring().expect("ring");
            for _ in 0..batch {
                let done = queue.wait().expect("a completion");
                done.result.expect("the command succeeds");
                if op == Op::Read {
                    let mut got = vec![0u8; 4096];
                    done.buffer.read_bytes(0, &mut got).expect("read the chunk");
                    assert!(
                        got == pattern(4096, seed + round * batch + done.tag),
                        "round {round}, block {}",
                        done.tag
                    );
                }
            }
        }
    }
    queue.doorbell_writes()
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn shadow_doorbells_carry_every_command_and_the_kernel_reads_what_they_wrote() {
    const ROUNDS: u64 = 20;
    const BATCH: u64 = 16;
    const DEPTH: u16 = 257;
    // 20 rounds of 16 writes and 16 reads: 640 commands in 40 batches, on a
    // 257-entry queue that wraps twice. QEMU's controller reads the queue's
    // tail from the shadow buffer once it took one (not from the register),
    // so a wrong shadow value would lose or replay commands.
    let commands = ROUNDS * BATCH * 2;
    let batches = ROUNDS * 2;
    let with_registers = with_usrdrv(|c| {
        assert!(!c.shadow_doorbells(), "off unless asked for");
        batches_through_one_queue(c, ROUNDS, BATCH, DEPTH, 7)
    });
    let with_shadow = with_usrdrv_options(
        ControllerOptions {
            shadow_doorbells: true,
        },
        |c| {
            // QEMU's controller offers them (OACS bit 8) and takes them.
            assert!(c.info().has_shadow_doorbells(), "OACS {:#x}", c.info().oacs);
            assert!(c.shadow_doorbells());
            batches_through_one_queue(c, ROUNDS, BATCH, DEPTH, 9_000)
        },
    );
    eprintln!(
        "{commands} commands in {batches} batches: {with_registers} doorbell writes with \
         registers only, {with_shadow} with shadow doorbells"
    );
    // Registers only: a tail doorbell per batch, and a head doorbell only
    // once per completion queue slack (the completion queue is twice as
    // long: about once per DEPTH completions). (With shadow doorbells QEMU
    // 7.2, idle between batches, asks for a tail and a head each: the
    // figures are printed, not compared.)
    let heads = commands / u64::from(DEPTH) + 1;
    assert!(
        (batches..=batches + heads).contains(&with_registers),
        "{with_registers} doorbell writes"
    );
    assert!(with_shadow > 0, "the first batch rings at least once");
    // The last round's blocks, as the kernel's driver reads them.
    let on_disk = kernel_read(FIRST_BYTE, (BATCH * 4096) as usize);
    for i in 0..BATCH {
        let at = (i * 4096) as usize;
        assert!(
            on_disk[at..at + 4096] == pattern(4096, 9_000 + (ROUNDS - 1) * BATCH + i)[..],
            "block {i}"
        );
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn injected_media_errors_fail_their_own_commands_and_the_queue_keeps_working() {
    use usrdrv_nvme::Op;
    with_usrdrv(|c| {
        let namespaces = c.namespaces().unwrap();
        let ns = *namespaces
            .iter()
            .find(|n| n.id == ERROR_NS)
            .expect("namespace 2");
        assert_eq!(ns.block_size, 512);
        let blocks = ns.blocks_in(4096);
        let mut queue = c.io_queue_for::<usrdrv::dma::PoolBuffer>(16).unwrap();
        let pool = c.device().dma_pool(4096, 15).unwrap();
        // Any write arms the rules.
        let buffer = c.device().alloc_dma(4096).unwrap();
        queue.write(&ns, 8, blocks, &buffer).unwrap();
        // One batch, failing and succeeding commands mixed: each gets its own
        // result, whatever the others did.
        let batch: [(Op, u64, Option<&str>); 8] = [
            (Op::Read, 1024, None),
            (Op::Read, READ_ERROR_LBA, Some("Unrecovered Read Error")),
            (Op::Read, READ_ERROR_LBA + 8, None),
            (Op::Write, WRITE_ERROR_LBA, Some("Write Fault")),
            (Op::Write, WRITE_ERROR_LBA - 8, None),
            // A transfer that only ends in the bad block fails too.
            (Op::Read, READ_ERROR_LBA - 4, Some("Unrecovered Read Error")),
            (Op::Read, READ_ERROR_LBA, Some("Unrecovered Read Error")),
            (Op::Write, 3000, None),
        ];
        for round in 0..5 {
            for (tag, (op, lba, _)) in batch.iter().enumerate() {
                let chunk = pool.alloc().expect("a free chunk");
                queue
                    .submit_deferred(*op, &ns, *lba, blocks, chunk, tag as u64)
                    .unwrap();
            }
            queue.ring().unwrap();
            let mut seen = [false; 8];
            for _ in 0..batch.len() {
                let done = queue.wait().unwrap();
                let (op, lba, expected) = batch[done.tag as usize];
                seen[done.tag as usize] = true;
                match (expected, &done.result) {
                    (None, Ok(())) => {}
                    (Some(name), Err(NvmeError::Command { status, .. })) => {
                        assert_eq!(status.name(), name, "round {round}: {op:?} at {lba}");
                    }
                    (_, result) => panic!("round {round}: {op:?} at {lba}: {result:?}"),
                }
            }
            assert!(
                seen.iter().all(|s| *s),
                "round {round}: every command came back"
            );
        }
        // The queue and the controller keep working, on both namespaces.
        queue.read(&ns, 1024, blocks, &buffer).unwrap();
        let disk = namespaces[0];
        queue
            .read(&disk, FIRST_BYTE / 512, disk.blocks_in(4096), &buffer)
            .unwrap();
    });
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn the_callers_own_memory_mapped_for_dma_carries_queued_reads_and_writes() {
    use usrdrv::dma::{Direction, DmaMapping};
    use usrdrv_nvme::Op;
    // 64 KiB and a block from the heap: the PRPs start wherever the
    // allocator put it and take a list; without an IOMMU (usrdma) the pages
    // are scattered, so the list has one run per page.
    let len = (64 << 10) + 512;
    let at = FIRST_BYTE + (6 << 20);
    let written: Vec<u8> = pattern(len, 123);
    let (runs, back) = with_usrdrv(|c| {
        let ns = c.namespaces().unwrap()[0];
        let lba = at / ns.block_size as u64;
        let blocks = ns.blocks_in(len);
        let mut queue = c.io_queue_for::<DmaMapping<Vec<u8>>>(4).unwrap();
        let out = c
            .device()
            .map_dma(written.clone(), Direction::ToDevice)
            .unwrap();
        let runs = out.sg_list().len();
        queue.submit(Op::Write, &ns, lba, blocks, out, 0).unwrap();
        let done = queue.wait().unwrap();
        done.result.unwrap();
        assert_eq!(done.buffer.unmap().unwrap(), written);
        let into = c
            .device()
            .map_dma(vec![0u8; len], Direction::FromDevice)
            .unwrap();
        queue.submit(Op::Read, &ns, lba, blocks, into, 1).unwrap();
        let done = queue.wait().unwrap();
        done.result.unwrap();
        (runs, done.buffer.unmap().unwrap())
    });
    eprintln!("{len} bytes in {runs} run(s) of device addresses");
    assert!(back == written, "read back through the mapping");
    assert!(
        kernel_read(at, len) == written,
        "the kernel reads what the mapped memory carried"
    );
}
