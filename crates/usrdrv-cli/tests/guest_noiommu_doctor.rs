//! `usrdrv doctor` and `usrdrv list` against the real kernel in the usrdrv
//! VM booted WITHOUT an IOMMU (no intel-iommu device, `intel_iommu=off`):
//! `cargo xtask test` runs `guest_noiommu*` binaries in that second boot.
//! The tests run as root.

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
fn doctor_fails_without_an_iommu_and_says_how_to_turn_it_on() {
    let out = usrdrv(&["doctor", "--json"]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["schema"], "usrdrv.doctor/1");
    assert_eq!(report["ready"], false);
    let iommu = finding(&report, "iommu");
    assert_eq!(iommu["status"], "fail", "{iommu:#}");
    let summary = iommu["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("intel_iommu=off"),
        "the rig boots with it: {summary}"
    );
    let fix = iommu["fix"].as_str().unwrap_or("");
    assert!(fix.contains("intel_iommu=on"), "{fix}");
    // The modules load without an IOMMU; remapping does not exist.
    assert_eq!(
        finding(&report, "vfio-modules")["status"],
        "ok",
        "{report:#}"
    );
    assert_eq!(
        finding(&report, "interrupt-remapping")["status"],
        "fail",
        "{report:#}"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn doctor_text_says_not_ready() {
    let out = usrdrv(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fail") && l.split_whitespace().nth(1) == Some("iommu")),
        "{text}"
    );
    assert!(text.contains("not ready: "), "{text}");
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
