//! The `usrdrv` binary against fake sysfs trees: list, bind, unbind, restore,
//! buffers (with nothing on usrdma: tests/usrdma.rs has the rest), and every
//! kind of bad input. Nothing here touches the real system.

use std::path::Path;
use std::process::{Command, Output};

use usrdrv::pci::fake_sysfs::FakeSysfs;

const PCI_IDS: &str = "1234  Technical Corp.\n\t11e8  Edu device\n1b36  Red Hat, Inc.\n\t0010  QEMU NVM Express Controller\nC 01  Mass storage controller\n\t08  Non-Volatile memory controller\n";

/// A machine with edu (no driver, own group), NVMe (nvme, own group) and a
/// two-function NIC sharing a group (one on igb, one on nothing).
fn machine() -> (FakeSysfs, tempfile::TempDir) {
    let fake = FakeSysfs::new();
    fake.add("0000:00:01.0", 0x1234, 0x11e8, 0x00ff00, None, Some(1));
    fake.add(
        "0000:00:02.0",
        0x1b36,
        0x0010,
        0x010802,
        Some("nvme"),
        Some(2),
    );
    fake.add(
        "0000:03:00.0",
        0x8086,
        0x1533,
        0x020000,
        Some("igb"),
        Some(7),
    );
    fake.add(
        "0000:03:00.1",
        0x8086,
        0x1533,
        0x020000,
        Some("vfio-pci"),
        Some(7),
    );
    fake.add_block("0000:00:02.0", "nvme0n1");
    fake.add_net("0000:03:00.0", "eth0", true);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    std::fs::create_dir_all(scratch.path().join("proc")).expect("create proc/");
    std::fs::write(
        scratch.path().join("proc/mounts"),
        "proc /proc proc rw 0 0\n",
    )
    .expect("write mounts");
    std::fs::write(scratch.path().join("pci.ids"), PCI_IDS).expect("write pci.ids");
    (fake, scratch)
}

fn usrdrv(fake: &FakeSysfs, scratch: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usrdrv"))
        .args(args)
        .arg("--sysfs")
        .arg(fake.root())
        .arg("--procfs")
        .arg(scratch.join("proc"))
        .arg("--state-dir")
        .arg(scratch.join("state"))
        .arg("--pci-ids")
        .arg(scratch.join("pci.ids"))
        .env_remove("USRDRV_STATE_DIR")
        .output()
        .expect("run usrdrv")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn list_json_matches_the_snapshot() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = json(&out);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/list.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the snapshot exists"))
            .expect("the snapshot is JSON");
    assert_eq!(
        got, snapshot,
        "usrdrv.list/1 changed: update JSON.md and the snapshot together"
    );
}

#[test]
fn list_says_what_is_missing_for_vfio() {
    let (fake, scratch) = machine();
    let got = json(&usrdrv(&fake, scratch.path(), &["list", "--json"]));
    let devices = got["devices"].as_array().unwrap();
    let by_addr = |a: &str| devices.iter().find(|d| d["address"] == a).unwrap().clone();
    assert_eq!(
        by_addr("0000:00:01.0")["vfio"]["missing"][0],
        "not bound to vfio-pci"
    );
    assert_eq!(
        by_addr("0000:00:02.0")["vfio"]["missing"][0],
        "bound to nvme, not vfio-pci"
    );
    let nic = by_addr("0000:03:00.1");
    assert_eq!(nic["vfio"]["ready"], false);
    assert_eq!(
        nic["vfio"]["missing"][0],
        "group shared with 0000:03:00.0 (igb)"
    );
    assert_eq!(
        by_addr("0000:00:02.0")["class_name"],
        "Non-Volatile memory controller"
    );
}

#[test]
fn list_filters() {
    let (fake, scratch) = machine();
    let addrs = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let got = json(&usrdrv(&fake, scratch.path(), &all));
        got["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        addrs(&["--vendor", "8086"]),
        ["0000:03:00.0", "0000:03:00.1"]
    );
    assert_eq!(
        addrs(&["--vendor", "1234", "--device", "11e8"]),
        ["0000:00:01.0"]
    );
    assert_eq!(addrs(&["--class", "01"]), ["0000:00:02.0"]);
    assert_eq!(
        addrs(&["--class", "020000"]),
        ["0000:03:00.0", "0000:03:00.1"]
    );
    assert_eq!(addrs(&["--driver", "none"]), ["0000:00:01.0"]);
    assert_eq!(addrs(&["--driver", "vfio-pci"]), ["0000:03:00.1"]);
    let bad = usrdrv(&fake, scratch.path(), &["list", "--class", "1"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&bad).contains("2, 4 or 6 hex digits"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn list_text_is_aligned_and_uncoloured_off_a_terminal() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["list"]);
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "no colour when piped");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ADDRESS"));
    let column = lines[0].find("DRIVER").unwrap();
    assert_eq!(&lines[2][column..column + 4], "nvme", "{text}");
    assert!(lines[1].contains("Technical Corp. Edu device"), "{text}");
}

#[test]
fn malformed_address_shows_the_accepted_forms_and_changes_nothing() {
    let (fake, scratch) = machine();
    for cmd in ["bind", "unbind", "restore"] {
        let out = usrdrv(&fake, scratch.path(), &[cmd, "00:1:2"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.contains("DDDD:BB:DD.F") && err.contains("BB:DD.F"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!scratch.path().join("state").exists());
}

#[test]
fn a_missing_device_is_named() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["bind", "0000:0a:00.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no PCI device at 0000:0a:00.0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_driver_is_refused_with_the_fix() {
    let (fake, scratch) = machine();
    let out = usrdrv(
        &fake,
        scratch.path(),
        &["bind", "--driver", "no_such_drv", "00:01.0"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no PCI driver named 'no_such_drv'") && err.contains("modprobe no_such_drv"),
        "{err}"
    );
    let over =
        std::fs::read_to_string(fake.device_dir("0000:00:01.0").join("driver_override")).unwrap();
    assert_eq!(over, "(null)\n", "nothing changed");
}

#[test]
fn a_shared_group_is_refused_listing_the_members() {
    let (fake, scratch) = machine();
    // 03:00.1 is on vfio-pci, but its group partner is on igb (and its interface up).
    fake.add("0000:03:00.2", 0x8086, 0x1533, 0x020000, None, Some(7));
    let out = usrdrv(&fake, scratch.path(), &["bind", "0000:03:00.2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("shares IOMMU group 7 with 0000:03:00.0 (bound to igb)"),
        "{err}"
    );
    assert!(err.contains("usrdrv bind --group"), "{err}");
}

#[test]
fn a_device_in_visible_use_is_refused() {
    let (fake, scratch) = machine();
    std::fs::write(
        scratch.path().join("proc/mounts"),
        "/dev/nvme0n1 /data ext4 rw 0 0\n",
    )
    .unwrap();
    let out = usrdrv(&fake, scratch.path(), &["bind", "0000:00:02.0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/dev/nvme0n1 is mounted on /data") && err.contains("--force"),
        "{err}"
    );
    let out = usrdrv(&fake, scratch.path(), &["bind", "--group", "0000:03:00.1"]);
    assert!(
        stderr(&out).contains("network interface eth0 is up"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_driver_that_does_not_take_the_device_leaves_it_as_it_was() {
    // In a fake tree no driver ever binds: the bind must fail cleanly, put the
    // override back, and remember nothing.
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["bind", "0000:00:01.0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("did not bind to vfio-pci"), "{err}");
    let over =
        std::fs::read_to_string(fake.device_dir("0000:00:01.0").join("driver_override")).unwrap();
    assert_eq!(over, "\n", "override cleared");
    assert!(
        !scratch.path().join("state/drivers.json").exists(),
        "nothing remembered"
    );
}

#[test]
fn binding_to_the_current_driver_is_a_no_op() {
    let (fake, scratch) = machine();
    let out = usrdrv(
        &fake,
        scratch.path(),
        &["bind", "0000:03:00.1", "--force", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = json(&out);
    assert_eq!(got["schema"], "usrdrv.bind/1");
    assert_eq!(got["changes"][0]["from"], "vfio-pci");
    assert_eq!(got["changes"][0]["to"], "vfio-pci");
}

#[test]
fn unbind_remembers_and_restore_needs_a_record() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["restore", "0000:00:02.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to restore for 0000:00:02.0"),
        "{}",
        stderr(&out)
    );
    let out = usrdrv(&fake, scratch.path(), &["unbind", "0000:00:02.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unbind = std::fs::read_to_string(fake.root().join("bus/pci/drivers/nvme/unbind")).unwrap();
    assert_eq!(unbind, "0000:00:02.0");
    let record = std::fs::read_to_string(scratch.path().join("state/drivers.json")).unwrap();
    assert!(record.contains("\"0000:00:02.0\": \"nvme\""), "{record}");
    // The fake kernel keeps the device on nvme, so restoring only forgets the record.
    let out = usrdrv(&fake, scratch.path(), &["restore", "0000:00:02.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record = std::fs::read_to_string(scratch.path().join("state/drivers.json")).unwrap();
    assert!(!record.contains("0000:00:02.0"), "{record}");
}

#[test]
fn permission_problems_name_the_file() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    // Run as nobody against a world-readable tree whose attribute files only
    // root may write: the bind must fail naming the file, and change nothing.
    let (fake, scratch) = machine();
    let open_up = |dir: &Path| {
        for entry in walk(dir) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    };
    open_up(fake.root());
    open_up(scratch.path());
    // The record of drivers is writable (the bind checks that first): the
    // refusal must come from the sysfs attribute.
    let state = scratch.path().join("state");
    std::fs::create_dir_all(&state).expect("create state/");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let binary = scratch.path().join("usrdrv");
    std::fs::copy(env!("CARGO_BIN_EXE_usrdrv"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Command::new(&binary);
    cmd.args(["bind", "0000:00:01.0", "--sysfs"])
        .arg(fake.root())
        .arg("--procfs")
        .arg(scratch.path().join("proc"))
        .arg("--state-dir")
        .arg(scratch.path().join("state"));
    if is_root() {
        cmd.uid(65534).gid(65534);
    }
    // Another test thread forking between our copy's close and this exec can
    // hold the copy open for writing for an instant (ETXTBSY): try again.
    let mut tries = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.expect("run usrdrv as nobody"),
        }
    };
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let named = fake
        .root()
        .join("bus/pci/devices/0000:00:01.0/driver_override");
    assert!(
        err.contains(&format!("permission denied writing {}", named.display()))
            && err.contains("needs root"),
        "{err}"
    );
    let file = fake.device_dir("0000:00:01.0").join("driver_override");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "(null)\n",
        "nothing changed"
    );
}

/// Every directory and file below `dir` (links not followed), `dir` included.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                all.extend(walk(&path));
            } else if entry.file_type().is_ok_and(|t| t.is_file()) {
                all.push(path);
            }
        }
    }
    all
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn buffers_says_where_names_live() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["buffers", "--json"]);
    assert!(out.status.success());
    let got = json(&out);
    assert_eq!(got["schema"], "usrdrv.buffers/2");
    assert_eq!(got["buffers"].as_array().unwrap().len(), 0);
    assert_eq!(got["devices"].as_array().unwrap().len(), 0);
    let text = stdout(&usrdrv(&fake, scratch.path(), &["buffers"]));
    assert!(
        text.contains("belong to the process that made them"),
        "{text}"
    );
}

#[test]
fn help_has_examples_and_exit_codes() {
    let (fake, scratch) = machine();
    let out = usrdrv(&fake, scratch.path(), &["--help"]);
    let text = stdout(&out);
    assert!(
        text.contains("Examples:") && text.contains("Exit status: 0 success, 1 failure"),
        "{text}"
    );
    for cmd in [
        "list", "info", "bind", "unbind", "restore", "doctor", "buffers",
    ] {
        let out = usrdrv(&fake, scratch.path(), &[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            stdout(&out).contains("Example"),
            "{cmd} --help has examples"
        );
    }
    let out = usrdrv(&fake, scratch.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unbind_refuses_a_device_in_use_unless_forced() {
    let (fake, scratch) = machine();
    std::fs::write(
        scratch.path().join("proc/mounts"),
        "/dev/nvme0n1 /data ext4 rw 0 0\n",
    )
    .unwrap();
    let out = usrdrv(&fake, scratch.path(), &["unbind", "0000:00:02.0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is mounted on /data") && err.contains("--force"),
        "{err}"
    );
    assert!(
        fake.device_dir("0000:00:02.0").join("driver").exists(),
        "still on its driver"
    );
    assert!(!scratch.path().join("state/drivers.json").exists());
    let out = usrdrv(
        &fake,
        scratch.path(),
        &["unbind", "--force", "0000:00:02.0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_process_holding_the_device_node_is_named_and_blocks_the_move() {
    let (fake, scratch) = machine();
    // Process 4242 holds /dev/vfio/7, the group of 0000:03:00.1 (on vfio-pci).
    let proc = scratch.path().join("proc/4242");
    std::fs::create_dir_all(proc.join("fd")).unwrap();
    std::fs::write(proc.join("comm"), "edu_hold\n").unwrap();
    std::os::unix::fs::symlink("/dev/vfio/7", proc.join("fd/5")).unwrap();
    std::os::unix::fs::symlink("/dev/null", proc.join("fd/0")).unwrap();
    for args in [
        &["unbind", "0000:03:00.1"][..],
        &["bind", "--driver", "igb", "0000:03:00.1"][..],
    ] {
        let out = usrdrv(&fake, scratch.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("process 4242 (edu_hold) holds /dev/vfio/7 open"),
            "{args:?}: {err}"
        );
    }
    assert!(
        fake.device_dir("0000:03:00.1").join("driver").exists(),
        "still on vfio-pci"
    );
    // Another process's unrelated descriptors do not count.
    std::fs::remove_file(proc.join("fd/5")).unwrap();
    let out = usrdrv(&fake, scratch.path(), &["unbind", "0000:03:00.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unwritable_record_stops_a_bind_before_anything_moves() {
    let (fake, scratch) = machine();
    let state = scratch.path().join("state");
    std::fs::write(&state, "a file where the directory should be").unwrap();
    let before =
        std::fs::read_to_string(fake.device_dir("0000:00:01.0").join("driver_override")).unwrap();
    let out = usrdrv(&fake, scratch.path(), &["bind", "0000:00:01.0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("state") || err.contains("drivers.json"),
        "{err}"
    );
    assert!(!err.contains("did not bind"), "nothing was tried: {err}");
    let after =
        std::fs::read_to_string(fake.device_dir("0000:00:01.0").join("driver_override")).unwrap();
    assert_eq!(before, after, "driver_override untouched");
}

#[test]
fn driver_names_that_are_paths_and_huge_addresses_are_refused_briefly() {
    let (fake, scratch) = machine();
    let override_file = fake.device_dir("0000:00:01.0").join("driver_override");
    let before = std::fs::read_to_string(&override_file).unwrap();
    for driver in ["..", ".", "../pci", "a/b", ""] {
        let out = usrdrv(
            &fake,
            scratch.path(),
            &["bind", "--driver", driver, "0000:00:01.0"],
        );
        assert_eq!(out.status.code(), Some(1), "{driver:?}");
        assert!(
            stderr(&out).contains("no PCI driver named"),
            "{driver:?}: {}",
            stderr(&out)
        );
    }
    let after = std::fs::read_to_string(&override_file).unwrap();
    assert_eq!(before, after, "driver_override never touched");
    let huge = "1".repeat(100_000);
    let out = usrdrv(&fake, scratch.path(), &["unbind", &huge]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).len() < 500, "{} bytes", stderr(&out).len());
}
