//! `usrdrv doctor` and `usrdrv list` against the real kernel in the usrdrv
//! VM booted WITHOUT an IOMMU (no intel-iommu device, `intel_iommu=off`):
//! `cargo xtask test` runs `guest_noiommu*` binaries in that second boot,
//! after loading the usrdma module (insmod), so doctor finds drivers can run
//! here through usrdma. The tests run as root.

use std::process::{Command, Output};

use serde_json::Value;

fn usrdrv(args: &[&str]) -> Output {
    Command::new("usrdrv")
        .args(args)
        .output()
        .expect("usrdrv is in the VM's PATH")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {report:#}"))
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_is_ready_without_an_iommu_through_usrdma() {
    let out = usrdrv(&["doctor", "--json"]);
    let report = json(&out);
    assert_eq!(report["schema"], "usrdrv.doctor/1");
    let usrdma = finding(&report, "usrdma");
    assert_eq!(
        usrdma["status"], "ok",
        "`cargo xtask test` loads usrdma (insmod) at every boot: {usrdma:#}"
    );
    assert!(
        usrdma["summary"]
            .as_str()
            .unwrap_or("")
            .starts_with("loaded, "),
        "{usrdma:#}"
    );
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ready"], true, "{report:#}");
    for f in report["findings"].as_array().expect("findings") {
        assert_ne!(f["status"], "fail", "{f:#}");
    }
    // No IOMMU: a warning, devices are not isolated.
    let iommu = finding(&report, "iommu");
    assert_eq!(iommu["status"], "warn", "{iommu:#}");
    let summary = iommu["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("intel_iommu=off"),
        "the rig boots with it: {summary}"
    );
    assert!(summary.contains("not isolated"), "{summary}");
    let fix = iommu["fix"].as_str().unwrap_or("");
    assert!(fix.contains("intel_iommu=on"), "{fix}");
    // The modules load without an IOMMU; remapping does not exist, which
    // only VFIO minds.
    assert_eq!(
        finding(&report, "vfio-modules")["status"],
        "ok",
        "{report:#}"
    );
    let ir = finding(&report, "interrupt-remapping");
    assert_eq!(ir["status"], "warn", "{ir:#}");
    assert!(
        ir["summary"]
            .as_str()
            .unwrap_or("")
            .contains("matters only for VFIO"),
        "{ir:#}"
    );
    // Root has CAP_SYS_RAWIO, which usrdma requires.
    assert_eq!(finding(&report, "user")["status"], "ok", "{report:#}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_text_says_ready_with_the_iommu_warning() {
    let out = usrdrv(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let row = |status: &str, check: &str| {
        text.lines()
            .any(|l| l.starts_with(status) && l.split_whitespace().nth(1) == Some(check))
    };
    assert!(row("warn", "iommu"), "{text}");
    assert!(row("ok", "usrdma"), "{text}");
    assert!(
        text.contains("ready: user-space drivers can run here"),
        "{text}"
    );
    assert!(!text.contains("not ready: "), "{text}");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn list_shows_no_iommu_groups_as_doctor_says() {
    let out = usrdrv(&["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let devices = report["devices"].as_array().expect("devices");
    assert!(
        devices
            .iter()
            .any(|d| d["vendor_id"] == "1234" && d["device_id"] == "11e8"),
        "edu is there: {report:#}"
    );
    for d in devices {
        assert!(d.get("iommu_group").is_some(), "{d:#}");
        assert!(d["iommu_group"].is_null(), "no IOMMU, no groups: {d:#}");
        assert_eq!(d["vfio"]["ready"], false, "{d:#}");
    }
    assert!(
        std::fs::read_dir("/sys/kernel/iommu_groups").map_or(true, |mut d| d.next().is_none()),
        "the kernel made no IOMMU groups"
    );
}
