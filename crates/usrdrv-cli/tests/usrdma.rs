//! The `usrdrv` binary and the usrdma module's side of a fake sysfs tree:
//! `buffers`, `bind --driver usrdma` and the usrdma section of `info`.
//! Nothing here touches the real system.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use usrdrv::pci::fake_sysfs::FakeSysfs;

const EDU: &str = "0000:00:03.0";
const EDU_2: &str = "0000:00:04.0";
const NVME: &str = "0000:00:02.0";

const EDU_BUFFERS: &str = "1 rx-ring 0x10000 0x7fe00000 0x2 4242\n2 - 0x1000 0x7fe10000 0 0\n";
const EDU_STATS: &str = "opened 1\nbuffers 2\nbuffer_bytes 69632\nuser_mappings 3\npinned_pages 4\nbounce_bytes 8192\nirqs 1\nirq_count 17\nquarantine_buffers 1\nquarantine_bytes 12288\nquarantine_pages 2\n";
const EDU_2_BUFFERS: &str = "5 frame buffer 0x200000 0x10000000 0x3 4243\n";
const EDU_2_STATS: &str = "opened 0\nbuffers 1\nbuffer_bytes 2097152\nuser_mappings 0\npinned_pages 0\nbounce_bytes 0\nirqs 0\nirq_count 0\n";

/// A machine without an IOMMU: two edu devices on usrdma (one with a node
/// in devfs), an NVMe on nvme; process 4242 is `edu-demo`, 4243 has exited
/// from procfs's point of view.
struct Machine {
    sys: FakeSysfs,
    rest: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let m = Self::without_usrdma();
        m.sys
            .add_usrdma(EDU, 0x1234, 0x11e8, EDU_BUFFERS, EDU_STATS);
        m.sys
            .add_usrdma(EDU_2, 0x1234, 0x11e8, EDU_2_BUFFERS, EDU_2_STATS);
        std::fs::create_dir_all(m.devfs().join("usrdma")).expect("create dev/usrdma");
        std::fs::write(m.devfs().join("usrdma").join(EDU), "").expect("make a fake node");
        m
    }

    /// The same machine before the module is loaded.
    fn without_usrdma() -> Self {
        let m = Self {
            sys: FakeSysfs::new(),
            rest: tempfile::tempdir().expect("a scratch directory"),
        };
        m.sys
            .add(NVME, 0x1b36, 0x0010, 0x010802, Some("nvme"), None);
        let proc = m.rest.path().join("proc");
        std::fs::create_dir_all(proc.join("4242")).expect("create proc/4242");
        std::fs::write(proc.join("4242/comm"), "edu-demo\n").expect("write comm");
        std::fs::write(proc.join("mounts"), "proc /proc proc rw 0 0\n").expect("write mounts");
        std::fs::create_dir_all(m.devfs()).expect("create dev/");
        m
    }

    fn devfs(&self) -> PathBuf {
        self.rest.path().join("dev")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_usrdrv"))
            .args(args)
            .arg("--sysfs")
            .arg(self.sys.root())
            .arg("--procfs")
            .arg(self.rest.path().join("proc"))
            .arg("--devfs")
            .arg(self.devfs())
            .arg("--state-dir")
            .arg(self.rest.path().join("state"))
            .arg("--pci-ids")
            .arg(self.rest.path().join("no-pci.ids"))
            .arg("--color")
            .arg("never")
            .env_remove("USRDRV_STATE_DIR")
            .output()
            .expect("run usrdrv")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("valid JSON")
    }

    /// Runs a command that must fail with status 1 and print nothing on
    /// stdout; its one-line error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("usrdrv: error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn buffers_lists_every_device_bound_to_usrdma() {
    let m = Machine::new();
    let expected = "\
DEVICE        ID  NAME          SIZE    DEVICE ADDRESS  FLAGS          OWNER
0000:00:03.0  1   rx-ring       64 KiB  0x7fe00000      persistent     4242 (edu-demo)
0000:00:03.0  2   -             4 KiB   0x7fe10000      -              exited
0000:00:04.0  5   frame buffer  2 MiB   0x10000000      persistent,wc  4243

3 buffers, 2116 KiB, on 2 devices bound to usrdma (0000:00:03.0, 0000:00:04.0)
";
    assert_eq!(m.ok(&["buffers"]), expected);
    // One device only.
    let one = m.ok(&["buffers", "00:04.0"]);
    assert!(one.contains("0000:00:04.0  5   frame buffer"), "{one}");
    assert!(!one.contains("rx-ring"), "{one}");
}

#[test]
fn buffers_json_matches_the_snapshot() {
    let m = Machine::new();
    let got = m.json(&["buffers"]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/buffers.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .expect("the snapshot exists (UPDATE_SNAPSHOTS=1 writes it)"),
    )
    .expect("the snapshot is JSON");
    assert_eq!(
        got, snapshot,
        "usrdrv.buffers/2 changed: update JSON.md and the snapshot together"
    );
    assert_eq!(got["schema"], "usrdrv.buffers/2");
    assert_eq!(got["devices"], json!([EDU, EDU_2]));
    assert_eq!(
        got["buffers"][1],
        json!({"device": EDU, "id": 2, "name": null, "size": 4096, "device_addr": "0x7fe10000",
               "write_combining": false, "persistent": false, "owner": null, "owner_command": null})
    );
}

#[test]
fn no_device_on_usrdma_is_an_empty_list_that_says_how_to_bind_one() {
    let m = Machine::without_usrdma();
    let text = m.ok(&["buffers"]);
    assert!(text.starts_with("No device is bound to usrdma"), "{text}");
    assert!(text.contains("`modprobe usrdma`"), "{text}");
    assert!(text.contains("kmod/usrdma with DKMS"), "{text}");
    assert!(
        text.contains("`usrdrv bind ADDR --driver usrdma`"),
        "{text}"
    );
    assert!(
        text.contains("belong to the process that made them"),
        "{text}"
    );
    let got = m.json(&["buffers"]);
    assert_eq!(
        got,
        json!({"schema": "usrdrv.buffers/2", "source": "usrdma", "usrdma_loaded": false,
               "devices": [], "buffers": []})
    );

    // The module loaded, nothing bound yet: no need to say how to load it.
    m.sys.add_driver("usrdma");
    let text = m.ok(&["buffers"]);
    assert!(!text.contains("modprobe"), "{text}");
    assert!(
        text.contains("`usrdrv bind ADDR --driver usrdma`"),
        "{text}"
    );
    assert_eq!(m.json(&["buffers"])["usrdma_loaded"], true);

    // A device on usrdma without buffers.
    m.sys.add_usrdma(EDU, 0x1234, 0x11e8, "", EDU_2_STATS);
    assert_eq!(
        m.ok(&["buffers"]),
        "No DMA buffers on 0000:00:03.0 (bound to usrdma).\n"
    );
}

#[test]
fn a_malformed_attribute_is_an_error_naming_file_and_line() {
    let m = Machine::new();
    m.sys.set_attribute(
        EDU_2,
        "usrdma_buffers",
        "5 frame 0x200000 0x10000000 0x3 4243\n6 bad 0x1000 zz 0x0 1\n",
    );
    for args in [
        &["buffers"][..],
        &["buffers", "--json"],
        &["buffers", EDU_2],
    ] {
        let err = m.fails(args);
        let file = m
            .sys
            .root()
            .join("bus/pci/devices")
            .join(EDU_2)
            .join("usrdma_buffers");
        assert!(
            err.contains(&format!("{}, line 2: dma_addr \"zz\"", file.display())),
            "{err}"
        );
        assert!(
            err.contains("id name size dma_addr flags owner_pid"),
            "{err}"
        );
    }
    // Cut short by the kernel's one-page limit.
    m.sys
        .set_attribute(EDU_2, "usrdma_buffers", "5 frame 0x200000 0x1000");
    assert!(
        m.fails(&["buffers"])
            .contains("does not end with a newline")
    );
}

#[test]
fn buffers_of_a_device_not_on_usrdma_says_how_to_bind_it() {
    let m = Machine::new();
    let err = m.fails(&["buffers", NVME]);
    assert!(
        err.contains("0000:00:02.0 is bound to nvme, not usrdma")
            && err.contains("usrdrv bind 0000:00:02.0 --driver usrdma"),
        "{err}"
    );
    let err = m.fails(&["buffers", "0000:00:1f.7"]);
    assert!(err.contains("no PCI device at 0000:00:1f.7"), "{err}");
}

#[test]
fn bind_to_usrdma_without_the_module_says_how_to_load_it() {
    let m = Machine::without_usrdma();
    m.sys
        .add("0000:00:05.0", 0x1234, 0x11e8, 0x00ff00, None, None);
    let err = m.fails(&["bind", "0000:00:05.0", "--driver", "usrdma"]);
    let driver_dir = m.sys.root().join("bus/pci/drivers/usrdma");
    assert!(
        err.contains(&format!(
            "the usrdma driver is not loaded ({} does not exist)",
            driver_dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("`modprobe usrdma`") && err.contains("kmod/usrdma with DKMS"),
        "{err}"
    );
    let over = std::fs::read_to_string(m.sys.device_dir("0000:00:05.0").join("driver_override"))
        .expect("read driver_override");
    assert_eq!(over, "(null)\n", "nothing changed");
    assert!(!m.rest.path().join("state/drivers.json").exists());
}

#[test]
fn bind_to_usrdma_ignores_iommu_groups_and_reports_a_refusal() {
    // A device sharing IOMMU group 7 with a function on igb: vfio-pci would
    // refuse (the whole group), usrdma goes ahead. The fake kernel never
    // binds, so the module "refuses" it.
    let m = Machine::new();
    m.sys.add_driver("vfio-pci");
    m.sys.add(
        "0000:03:00.0",
        0x8086,
        0x1533,
        0x020000,
        Some("igb"),
        Some(7),
    );
    m.sys
        .add("0000:03:00.1", 0x8086, 0x1533, 0x020000, None, Some(7));
    let err = m.fails(&["bind", "0000:03:00.1"]);
    assert!(err.contains("shares IOMMU group 7"), "{err}");
    let err = m.fails(&["bind", "0000:03:00.1", "--driver", "usrdma"]);
    assert!(
        err.contains("0000:03:00.1 did not bind to usrdma (its driver is now none)")
            && err.contains("dmesg | grep usrdma"),
        "{err}"
    );
    assert!(!err.contains("modprobe"), "the module is loaded: {err}");
}

#[test]
fn bind_to_usrdma_prints_the_node() {
    let m = Machine::new();
    let text = m.ok(&["bind", EDU, "--driver", "usrdma"]);
    let node = m.devfs().join("usrdma").join(EDU);
    assert_eq!(
        text,
        format!(
            "0000:00:03.0: already on usrdma\n  device node: {}\n",
            node.display()
        )
    );
    // EDU_2 has no node in the fake devfs.
    let text = m.ok(&["bind", EDU_2, "--driver", "usrdma"]);
    assert!(
        text.contains("(not there: is devtmpfs mounted on /dev?"),
        "{text}"
    );
    let got = m.json(&["bind", EDU, "--driver", "usrdma"]);
    assert_eq!(
        got,
        json!({"schema": "usrdrv.bind/1", "changes": [
            {"address": EDU, "from": "usrdma", "to": "usrdma", "node": node.display().to_string()}
        ]})
    );
    // Another driver has no node usrdrv knows of.
    let got = m.json(&["bind", NVME, "--driver", "nvme"]);
    assert_eq!(got["changes"][0]["node"], Value::Null);
}

#[test]
fn info_shows_the_usrdma_section() {
    let m = Machine::new();
    let got = m.json(&["info", EDU]);
    let node = m.devfs().join("usrdma").join(EDU);
    assert_eq!(got["schema"], "usrdrv.info/1");
    assert_eq!(got["driver"], "usrdma");
    let usrdma = &got["usrdma"];
    assert_eq!(usrdma["node"], node.display().to_string());
    assert_eq!(
        usrdma["stats"],
        json!({"opened": true, "buffers": 2, "buffer_bytes": 69632, "user_mappings": 3,
               "pinned_pages": 4, "bounce_bytes": 8192, "irqs": 1, "irq_count": 17,
               "quarantine": {"buffers": 1, "bytes": 12288, "pages": 2}})
    );
    assert_eq!(usrdma["error"], Value::Null);
    assert_eq!(usrdma["buffers"][0]["name"], "rx-ring");
    assert_eq!(usrdma["buffers"][0]["owner_command"], "edu-demo");
    assert_eq!(usrdma["buffers"].as_array().map(Vec::len), Some(2));
    assert_eq!(got["vfio"]["reason"], "no_iommu_group");
    assert_eq!(m.json(&["info", NVME])["usrdma"], Value::Null);

    let text = m.ok(&["info", EDU]);
    let section = format!(
        "\nusrdma\n  node          {}\n  open          yes: a process has the node open\n  buffers       2 (68 KiB)\n  user memory   3 mappings mapped for DMA, 4 pages pinned, 8 KiB bounced\n  interrupts    1 vector set up, 17 signalled since the module was loaded\n  quarantine    1 buffer (12 KiB) and 2 pages pinned kept from released owners until the device is reset, declared quiesced, or bus mastering stays off for the grace period\n\n  ID  NAME     SIZE    DEVICE ADDRESS  FLAGS       OWNER\n  1   rx-ring  64 KiB  0x7fe00000      persistent  4242 (edu-demo)\n  2   -        4 KiB   0x7fe10000      -           exited\n",
        node.display()
    );
    assert!(text.ends_with(&section), "{text}");
    assert!(!m.ok(&["info", NVME]).contains("\nusrdma\n"));
}

#[test]
fn info_reports_bad_usrdma_attributes_without_failing() {
    let m = Machine::new();
    m.sys
        .set_attribute(EDU_2, "usrdma_stats", "opened 0\nbuffers 1\n");
    let got = m.json(&["info", EDU_2]);
    let usrdma = &got["usrdma"];
    assert_eq!(usrdma["stats"], Value::Null);
    assert_eq!(usrdma["buffers"].as_array().map(Vec::len), Some(1));
    let error = usrdma["error"].as_str().unwrap_or_default();
    assert!(error.contains("has no `buffer_bytes` line"), "{error}");
    let text = m.ok(&["info", EDU_2]);
    assert!(
        text.contains("(missing: is devtmpfs mounted on /dev?)"),
        "{text}"
    );
    assert!(text.contains("has no `buffer_bytes` line"), "{text}");
}
