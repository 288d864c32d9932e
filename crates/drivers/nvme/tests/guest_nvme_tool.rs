//! The `usrdrv-nvme` tool in the usrdrv VM: identify, write and read back
//! through files, and a short perf run, over VFIO.

use std::process::Command;

use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};

fn tool(args: &[&str]) -> std::process::Output {
    Command::new("usrdrv-nvme")
        .args(args)
        .output()
        .expect("usrdrv-nvme is in the VM's PATH")
}

fn ok(args: &[&str]) -> String {
    let out = tool(args);
    assert!(
        out.status.success(),
        "usrdrv-nvme {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs `f` with the controller on vfio-pci, then gives it back to nvme.
fn on_vfio(f: impl FnOnce(PciAddress) + std::panic::UnwindSafe) {
    let sysfs = Sysfs::system();
    let nvme = sysfs.find(0x1b36, 0x0010).expect("scan sysfs")[0];
    sysfs.bind(nvme, VFIO_PCI_DRIVER).expect("bind to vfio-pci");
    let result = std::panic::catch_unwind(|| f(nvme));
    sysfs.bind(nvme, "nvme").expect("give it back to nvme");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn identify_write_read_and_perf() {
    on_vfio(|nvme| {
        let addr = nvme.to_string();
        let identify: serde_json::Value =
            serde_json::from_str(&ok(&["identify", &addr, "--json"])).unwrap();
        assert_eq!(identify["schema"], "usrdrv-nvme.identify/1");
        assert_eq!(identify["serial"], "usrdrv-nvme0");
        assert_eq!(identify["namespaces"][0]["bytes"], 64u64 << 20);
        let text = ok(&["identify", &addr]);
        assert!(text.contains("serial usrdrv-nvme0"), "{text}");

        // 16 blocks of 512 bytes from a file, then back into another.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        let input = dir.path().join("in.bin");
        let output = dir.path().join("out.bin");
        std::fs::write(&input, &data).unwrap();
        let lba = "100000";
        ok(&[
            "write",
            &addr,
            "--lba",
            lba,
            "--count",
            "16",
            "--file",
            input.to_str().unwrap(),
        ]);
        ok(&[
            "read",
            &addr,
            "--lba",
            lba,
            "--count",
            "16",
            "--file",
            output.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(&output).unwrap(), data);
        let wrong = tool(&[
            "write",
            &addr,
            "--lba",
            lba,
            "--count",
            "3",
            "--file",
            input.to_str().unwrap(),
        ]);
        assert_eq!(wrong.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&wrong.stderr).contains("8192 bytes given for 3 blocks"));

        let perf: serde_json::Value = serde_json::from_str(&ok(&[
            "perf",
            &addr,
            "--time",
            "1",
            "--queue-depth",
            "8",
            "--pattern",
            "randread",
            "--json",
        ]))
        .unwrap();
        assert_eq!(perf["schema"], "usrdrv-nvme.perf/1");
        let ios = perf["ios"].as_u64().unwrap();
        assert!(ios > 0, "{perf}");
        let p50 = perf["latency_us"]["p50"].as_f64().unwrap();
        let max = perf["latency_us"]["max"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= max, "{perf}");
        let interrupts: serde_json::Value = serde_json::from_str(&ok(&[
            "perf",
            &addr,
            "--time",
            "1",
            "--queue-depth",
            "4",
            "--queues",
            "2",
            "--interrupt",
            "--json",
        ]))
        .unwrap();
        assert_eq!(interrupts["completions"], "interrupt");
        assert!(interrupts["ios"].as_u64().unwrap() > 0, "{interrupts}");
        let refused = tool(&["perf", &addr, "--queues", "1000", "--time", "1"]);
        assert_eq!(refused.status.code(), Some(1));
    });
}

/// The block device of the first namespace of the controller at `nvme`,
/// once it opens (after a rebind to nvme, the disk appears a moment later).
fn block_device(nvme: PciAddress) -> std::path::PathBuf {
    let dir = format!("/sys/bus/pci/devices/{nvme}/nvme");
    let start = std::time::Instant::now();
    loop {
        let found = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|ctrl| {
                std::fs::read_dir(ctrl.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            // Namespace 1 by its ID: the kernel may name a controller's
            // namespaces in any order.
            .find(|e| {
                std::fs::read_to_string(e.path().join("nsid")).is_ok_and(|id| id.trim() == "1")
            })
            .map(|e| std::path::Path::new("/dev").join(e.file_name()));
        if let Some(dev) = found
            && std::fs::File::open(&dev).is_ok()
        {
            return dev;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no namespace block device under {dir} opens"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn kernel_mode_writes_what_the_kernel_reads_back() {
    use std::io::{Read, Write};
    let sysfs = Sysfs::system();
    let nvme = sysfs.find(0x1b36, 0x0010).expect("scan sysfs")[0];
    let dev = block_device(nvme);
    let size = 64usize << 20;
    // Zeroes everywhere first, through the kernel's page cache.
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all(&vec![0u8; size]).unwrap();
        f.sync_all().unwrap();
    }
    let dev_str = dev.to_str().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "perf",
        dev_str,
        "--pattern",
        "write",
        "--queue-depth",
        "4",
        "--io-size",
        "4096",
        "--time",
        "1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["schema"], "usrdrv-nvme.perf/1");
    assert_eq!(report["driver"], "kernel");
    assert_eq!(report["completions"], "interrupt");
    let ios = report["ios"].as_u64().unwrap() as usize;
    assert!(ios > 0, "{report}");
    // Read it back through the kernel, past its page cache.
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let mut data = vec![0u8; size];
    std::fs::File::open(&dev)
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    // Sequential 4 KiB writes from block 0, wrapping at the end; every
    // write fills its buffer with 0x5a.
    let written = (ios * 4096).min(size);
    assert!(
        data[..written].iter().all(|&b| b == 0x5a),
        "the first {ios} blocks of 4 KiB are not all 0x5a"
    );
    assert!(
        data[written..].iter().all(|&b| b == 0),
        "data past the {ios} writes changed"
    );

    // Random reads through io_uring report what the text form shows.
    let text = ok(&["perf", dev_str, "--time", "1", "--queue-depth", "2"]);
    assert!(
        text.contains("(kernel) Randread 4096 B, QD 2 x 1 queue(s), interrupt"),
        "{text}"
    );
    let bad = tool(&["perf", dev_str, "--io-size", "100", "--time", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--io-size must be a multiple"));
}
