//! `usrdrv bind`, `unbind`, `restore` and `list` against the real kernel in the
//! usrdrv VM (edu and NVMe), run by `cargo xtask test`.

use std::process::{Command, Output};

use usrdrv::pci::{PciAddress, Sysfs};

fn usrdrv(args: &[&str]) -> Output {
    Command::new("usrdrv")
        .args(args)
        .output()
        .expect("usrdrv is in the VM's PATH")
}

fn ok(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = usrdrv(&all);
    assert!(
        out.status.success(),
        "usrdrv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn find(vendor: u16, device: u16) -> PciAddress {
    Sysfs::system().find(vendor, device).expect("scan sysfs")[0]
}

fn driver(address: PciAddress) -> Option<String> {
    Sysfs::system().driver(address).expect("read the driver")
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn nvme_goes_to_vfio_and_back_to_its_driver() {
    let nvme = find(0x1b36, 0x0010);
    let addr = nvme.to_string();
    assert_eq!(driver(nvme).as_deref(), Some("nvme"));
    let listed = ok(&["list", "--vendor", "1b36"]);
    assert_eq!(
        listed["devices"][0]["vfio"]["missing"][0],
        "bound to nvme, not vfio-pci"
    );

    let bound = ok(&["bind", &addr]);
    assert_eq!(bound["changes"][0]["from"], "nvme");
    assert_eq!(bound["changes"][0]["to"], "vfio-pci");
    assert_eq!(driver(nvme).as_deref(), Some("vfio-pci"));
    let listed = ok(&["list", "--vendor", "1b36"]);
    assert_eq!(listed["devices"][0]["vfio"]["ready"], true);
    let group = listed["devices"][0]["iommu_group"].as_u64().unwrap();
    assert!(std::path::Path::new(&format!("/dev/vfio/{group}")).exists());

    // A second bind remembers nothing new; restore goes back to nvme.
    ok(&["bind", &addr]);
    let restored = ok(&["restore", &addr]);
    assert_eq!(restored["changes"][0]["to"], "nvme");
    assert_eq!(driver(nvme).as_deref(), Some("nvme"));
    let out = usrdrv(&["restore", &addr]);
    assert_eq!(out.status.code(), Some(1), "nothing left to restore");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn edu_unbind_bind_restore_round_trip() {
    let edu = find(0x1234, 0x11e8);
    let addr = edu.to_string();
    // Start from no driver, as the VM boots.
    if driver(edu).is_some() {
        ok(&["unbind", &addr]);
        let _ = std::fs::write(format!("/sys/bus/pci/devices/{addr}/driver_override"), "\n");
        let _ = std::fs::remove_file("/run/usrdrv/drivers.json");
    }
    assert_eq!(driver(edu), None);
    ok(&["bind", &addr]);
    assert_eq!(driver(edu).as_deref(), Some("vfio-pci"));
    ok(&["unbind", &addr]);
    assert_eq!(driver(edu), None);
    ok(&["bind", "--driver", "uio_pci_generic", &addr]);
    assert_eq!(driver(edu).as_deref(), Some("uio_pci_generic"));
    // Restore goes back to what it had before usrdrv first touched it: nothing.
    ok(&["restore", &addr]);
    assert_eq!(driver(edu), None);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_mounted_nvme_is_refused_unless_forced() {
    let nvme = find(0x1b36, 0x0010);
    let addr = nvme.to_string();
    std::fs::create_dir_all("/mnt/usrdrv-test").unwrap();
    // Put a filesystem on the namespace and mount it (busybox has mke2fs).
    // Namespace 1, by its ID (namespace 2 fails writes on purpose, and the
    // kernel may name a controller's namespaces in any order).
    let block = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            n.starts_with("nvme")
                && std::fs::read_to_string(format!("/sys/block/{n}/nsid"))
                    .is_ok_and(|id| id.trim() == "1")
        })
        .expect("the NVMe namespace's block device");
    let dev = format!("/dev/{block}");
    let status = Command::new("mke2fs").arg(&dev).output().unwrap().status;
    assert!(status.success(), "mke2fs {dev}");
    let status = Command::new("mount")
        .args([&dev, "/mnt/usrdrv-test"])
        .status()
        .unwrap();
    assert!(status.success(), "mount {dev}");
    let outs: Vec<Output> = [&["bind", &addr][..], &["unbind", &addr][..]]
        .iter()
        .map(|args| usrdrv(args))
        .collect();
    let _ = Command::new("umount").arg("/mnt/usrdrv-test").status();
    for out in outs {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{dev} is mounted on /mnt/usrdrv-test")),
            "{err}"
        );
    }
    assert_eq!(driver(nvme).as_deref(), Some("nvme"), "nothing changed");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_held_device_is_refused_and_a_refused_bind_keeps_the_driver_it_had() {
    let edu = find(0x1234, 0x11e8);
    let addr = edu.to_string();
    ok(&["bind", &addr]);
    assert_eq!(driver(edu).as_deref(), Some("vfio-pci"));
    let group = Sysfs::system()
        .iommu_group(edu)
        .expect("read the group")
        .expect("edu has a group");
    let node = format!("/dev/vfio/{group}");
    // This process holds the group open, as a driver would.
    let held = std::fs::File::open(&node).expect("open the group node");
    let out = usrdrv(&["unbind", &addr]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("process {} (", std::process::id()))
            && err.contains(&format!("holds {node} open")),
        "{err}"
    );
    assert_eq!(driver(edu).as_deref(), Some("vfio-pci"), "nothing changed");
    drop(held);
    // pcieport refuses edu: the device must go back to vfio-pci, not to the
    // kernel's own choice (no driver at all for edu).
    let out = usrdrv(&["bind", "--driver", "pcieport", &addr]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(driver(edu).as_deref(), Some("vfio-pci"), "{err}");
    // Back to where it was before this test, if this test moved it.
    let _ = usrdrv(&["restore", &addr]);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn bad_input_is_one_line_and_changes_nothing() {
    let nvme = find(0x1b36, 0x0010);
    for (args, want) in [
        (vec!["bind", "nonsense"], "DDDD:BB:DD.F"),
        (
            vec!["bind", "0000:0f:1f.7"],
            "no PCI device at 0000:0f:1f.7",
        ),
        (
            vec!["bind", "--driver", "not-a-driver", &nvme.to_string()],
            "no PCI driver named 'not-a-driver'",
        ),
    ] {
        let out = usrdrv(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(driver(nvme).as_deref(), Some("nvme"));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_forced_move_waits_for_a_holder_a_bounded_time_and_reports_it() {
    use std::time::{Duration, Instant};
    use usrdrv::dma::DmaMask;

    let edu = find(0x1234, 0x11e8);
    let addr = edu.to_string();
    ok(&["bind", &addr]);
    // Held by a usrdrv driver in this process: it lets go as soon as asked.
    let device = usrdrv::Device::open(edu, DmaMask::new(28).unwrap()).unwrap();
    let buffer = device.alloc_dma(4096).unwrap();
    let started = Instant::now();
    let out = usrdrv(&["unbind", "--force", &addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(driver(edu), None);
    assert!(device.is_revoked());
    drop((buffer, device));

    // A holder that keeps the device for a grace period longer than the
    // command waits: reported, and the move completes once it lets go.
    ok(&["bind", &addr]);
    let device = usrdrv::Device::open(edu, DmaMask::new(28).unwrap()).unwrap();
    device.set_release_policy(usrdrv::ReleasePolicy::Grace(Duration::from_secs(4)));
    let started = Instant::now();
    let out = usrdrv(&["unbind", "--force", "--wait", "1", &addr]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("still held by process {} (", std::process::id()))
            && err.contains("in the background"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(device.release_requested() && !device.is_revoked());
    // (The kernel drops the driver link as the unbind starts, before it
    // waits: the revocation says when the wait is over.)
    let asked = Instant::now();
    while !device.is_revoked() {
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "the device is let go after the grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(driver(edu), None);
    drop(device);
    // Back to where it was before this test, if this test moved it.
    let _ = usrdrv(&["restore", &addr]);
}
