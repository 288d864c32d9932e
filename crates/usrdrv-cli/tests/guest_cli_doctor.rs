//! `usrdrv doctor` against the real kernel in the usrdrv VM, booted with its
//! emulated Intel IOMMU (interrupt remapping on), the VFIO modules loaded
//! and the usrdma module too (`cargo xtask test` loads it at every boot); run
//! by `cargo xtask test`. The tests run as root.

use std::process::{Command, Output};

use serde_json::Value;
use usrdrv::pci::{Sysfs, VFIO_PCI_DRIVER};

const EDU_VENDOR: u16 = 0x1234;
const EDU_DEVICE: u16 = 0x11e8;

fn usrdrv(args: &[&str]) -> Output {
    Command::new("usrdrv")
        .args(args)
        .output()
        .expect("usrdrv is in the VM's PATH")
}

/// `usrdrv doctor --json`: exit status and report.
fn doctor() -> (i32, Value) {
    let out = usrdrv(&["doctor", "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exited normally"), report)
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {report:#}"))
}

fn assert_ok(report: &Value, check: &str) {
    let f = finding(report, check);
    assert_eq!(f["status"], "ok", "{f:#}");
    assert!(f["fix"].is_null(), "{f:#}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_finds_the_vm_ready_for_user_space_drivers() {
    let (code, report) = doctor();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["schema"], "usrdrv.doctor/1");
    assert_eq!(report["ready"], true, "{report:#}");
    for check in [
        "iommu",
        "interrupt-remapping",
        "vfio-modules",
        "dev-vfio",
        "user",
        "memlock",
    ] {
        assert_ok(&report, check);
    }
    let iommu = finding(&report, "iommu")["summary"].as_str().unwrap_or("");
    assert!(
        iommu.contains("dmar0"),
        "QEMU's intel-iommu registers dmar0: {iommu}"
    );
    assert!(iommu.contains("intel_iommu=on"), "{iommu}");
    let ir = finding(&report, "interrupt-remapping")["summary"]
        .as_str()
        .unwrap_or("");
    assert!(
        ir.contains("IR-"),
        "remapped interrupts in /proc/interrupts: {ir}"
    );
    assert!(ir.contains("dmar0"), "ecap says dmar0 supports it: {ir}");
    let modules = finding(&report, "vfio-modules")["summary"]
        .as_str()
        .unwrap_or("");
    assert_eq!(modules, "loaded: vfio, vfio_pci, vfio_iommu_type1");
    // `cargo xtask test` loads usrdma at every boot: fine, though not needed
    // with the IOMMU on.
    assert_ok(&report, "usrdma");
    let usrdma = finding(&report, "usrdma")["summary"].as_str().unwrap_or("");
    assert!(usrdma.contains("prefer VFIO"), "{usrdma}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_sees_a_device_bound_to_vfio_and_its_group_node() {
    let sysfs = Sysfs::system();
    let edu = sysfs.find(EDU_VENDOR, EDU_DEVICE).expect("scan sysfs")[0];
    sysfs
        .bind(edu, VFIO_PCI_DRIVER)
        .expect("bind edu to vfio-pci");
    let group = sysfs
        .iommu_group(edu)
        .expect("read the group")
        .expect("the IOMMU is on");
    let (code, report) = doctor();
    assert_eq!(code, 0, "{report:#}");
    assert_ok(&report, "devices");
    let devices = finding(&report, "devices")["summary"]
        .as_str()
        .unwrap_or("");
    assert!(
        devices.contains(&format!("{edu} (group {group})")),
        "{devices}"
    );
    let nodes = finding(&report, "dev-vfio")["summary"]
        .as_str()
        .unwrap_or("");
    assert!(nodes.contains(&group.to_string()), "{nodes}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_text_has_one_row_per_check_and_a_verdict() {
    let out = usrdrv(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Shown with --nocapture, and on failure.
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("STATUS  CHECK"), "{text}");
    for check in [
        "iommu",
        "usrdma",
        "interrupt-remapping",
        "vfio-modules",
        "memlock",
        "hugepages",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(check)),
            "no {check} row: {text}"
        );
    }
    assert!(
        text.contains("ready: user-space drivers can run here"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour off a terminal");
}
