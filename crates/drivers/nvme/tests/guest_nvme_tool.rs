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
