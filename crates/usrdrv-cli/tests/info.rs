//! `usrdrv info` against a fake sysfs tree: the real binary, its JSON and text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use usrdrv::pci::fake_sysfs::FakeSysfs;

const EDU: &str = "0000:00:03.0";
const NVME: &str = "0000:00:04.0";
/// A two-function NIC sharing IOMMU group 5.
const NIC: &str = "0000:00:05.0";
const NIC_1: &str = "0000:00:05.1";

const PCI_IDS: &str = "\
# a small pci.ids for tests
1234  Technical Corp.
\t11e8  Edu device
1b36  Red Hat, Inc.
\t0010  QEMU NVM Express Controller
8086  Intel Corporation
\t1521  I350 Gigabit Network Connection
\t\t8086 0001  Ethernet Server Adapter I350-T4
C 00  Unclassified device
\t80  Unclassified device
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t02  NVM Express
C 02  Network controller
\t00  Ethernet controller
";

// The kernel's IORESOURCE_* flags as `resource` shows them.
const MEM32: u64 = 0x0004_0200;
const MEM64: u64 = 0x0014_0204;
const MEM64_PREFETCH: u64 = 0x0014_220c;
const IO: u64 = 0x0004_0101;
const ROM: u64 = 0x0004_6200;

/// Configuration space with the IDs, the interrupt pin and a capability list
/// built from `(offset, bytes)` entries chained in the given order.
fn config(size: usize, vendor: u16, device: u16, pin: u8, caps: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut c = vec![0u8; size];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[0x3d] = pin;
    if let Some((first, _)) = caps.first() {
        c[0x06] = 0x10; // status: capability list
        c[0x34] = *first as u8;
    }
    for (i, (at, bytes)) in caps.iter().enumerate() {
        c[*at..*at + bytes.len()].copy_from_slice(bytes);
        c[*at + 1] = caps.get(i + 1).map_or(0, |(next, _)| *next as u8);
    }
    c
}

/// An MSI capability: `log2` of the vector count, 64-bit, per-vector masking.
fn msi(log2_vectors: u16, address_64: bool, masking: bool) -> Vec<u8> {
    let control = log2_vectors << 1 | u16::from(address_64) << 7 | u16::from(masking) << 8;
    let mut cap = vec![0x05, 0];
    cap.extend_from_slice(&control.to_le_bytes());
    cap
}

/// An MSI-X capability with `size` entries, table and PBA as (BAR, offset).
fn msix(size: u16, table: (u32, u32), pba: (u32, u32)) -> Vec<u8> {
    let mut cap = vec![0x11, 0];
    cap.extend_from_slice(&(size - 1).to_le_bytes());
    cap.extend_from_slice(&(table.1 | table.0).to_le_bytes());
    cap.extend_from_slice(&(pba.1 | pba.0).to_le_bytes());
    cap
}

/// Extended capability header: id, version, next.
fn extended(c: &mut [u8], at: usize, id: u16, version: u32, next: u32) {
    let header = u32::from(id) | version << 16 | next << 20;
    c[at..at + 4].copy_from_slice(&header.to_le_bytes());
}

/// The fixed tree every test uses.
struct Fixture {
    fake: FakeSysfs,
    pci_ids: PathBuf,
    _ids_dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let fake = FakeSysfs::new();

    // edu: no driver, alone in group 3, NUMA node 0, BAR0 1 MiB, one MSI vector, INTA.
    fake.add(EDU, 0x1234, 0x11e8, 0x00ff00, None, Some(3));
    fake.set_resources(EDU, &[(0xfea0_0000, 0xfeaf_ffff, MEM32)]);
    fake.set_config(
        EDU,
        &config(256, 0x1234, 0x11e8, 1, &[(0x40, msi(0, true, false))]),
    );
    fake.set_numa_node(EDU, 0);

    // NVMe on nvme: BAR0 64-bit 16 KiB, PM -> MSI-X (65) -> PCIe, AER -> DSN.
    fake.add(NVME, 0x1b36, 0x0010, 0x010802, Some("nvme"), Some(4));
    fake.set_resources(NVME, &[(0xfebd_0000, 0xfebd_3fff, MEM64), (0, 0, 0)]);
    let mut c = config(
        4096,
        0x1b36,
        0x0010,
        1,
        &[
            (0x40, vec![0x01, 0, 0x03, 0x00]),
            (0x60, msix(65, (0, 0x2000), (0, 0x3000))),
            (0x80, vec![0x10, 0, 0x02, 0x00]),
        ],
    );
    extended(&mut c, 0x100, 0x0001, 2, 0x148);
    extended(&mut c, 0x148, 0x0003, 1, 0);
    fake.set_config(NVME, &c);

    // A NIC function with every kind of BAR, a ROM, MSI and MSI-X, sharing
    // group 5 with a second function on vfio-pci; NUMA node 1.
    fake.add(NIC, 0x8086, 0x1521, 0x020000, Some("igb"), Some(5));
    fake.set_resources(
        NIC,
        &[
            (0x3800_0000_0000, 0x3800_0001_ffff, MEM64_PREFETCH),
            (0, 0, 0),
            (0xe000, 0xe01f, IO),
            (0xfe80_0000, 0xfe80_3fff, MEM32),
            (0, 0, 0),
            (0, 0, 0),
            (0xfe00_0000, 0xfe07_ffff, ROM),
        ],
    );
    let mut c = config(
        4096,
        0x8086,
        0x1521,
        2,
        &[
            (0x40, vec![0x01, 0, 0x03, 0x00]),
            (0x50, msi(3, true, true)),
            (0x70, msix(10, (3, 0), (3, 0x2000))),
            (0xa0, vec![0x10, 0, 0x02, 0x00]),
            (0xe0, vec![0x42, 0]), // an ID usrdrv has no name for
        ],
    );
    extended(&mut c, 0x100, 0x0001, 2, 0x140);
    extended(&mut c, 0x140, 0x0003, 1, 0x150);
    extended(&mut c, 0x150, 0x0010, 1, 0);
    fake.set_config(NIC, &c);
    fake.set_numa_node(NIC, 1);
    // The second function keeps the 64 bytes of configuration space that
    // non-root users get, and no BARs.
    fake.add(NIC_1, 0x8086, 0x1521, 0x020000, Some("vfio-pci"), Some(5));
    fake.set_numa_node(NIC_1, 1);

    let ids_dir = tempfile::tempdir().expect("make a temporary directory");
    let pci_ids = ids_dir.path().join("pci.ids");
    std::fs::write(&pci_ids, PCI_IDS).expect("write pci.ids");
    Fixture {
        fake,
        pci_ids,
        _ids_dir: ids_dir,
    }
}

fn usrdrv(root: &Path, pci_ids: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usrdrv"))
        .arg("info")
        .arg("--sysfs")
        .arg(root)
        .arg("--pci-ids")
        .arg(pci_ids)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run usrdrv")
}

impl Fixture {
    fn run(&self, args: &[&str]) -> Output {
        usrdrv(self.fake.root(), &self.pci_ids, args)
    }

    fn json(&self, address: &str) -> Value {
        let out = self.run(&[address, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("usrdrv info --json prints JSON")
    }

    fn text(&self, address: &str) -> String {
        let out = self.run(&[address, "--color", "never"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("text output is UTF-8")
    }
}

#[test]
fn identity_names_numa_and_group() {
    let f = fixture();
    let edu = f.json(EDU);
    assert_eq!(edu["schema"], "usrdrv.info/1");
    assert_eq!(edu["address"], EDU);
    assert_eq!(edu["vendor_id"], "1234");
    assert_eq!(edu["device_id"], "11e8");
    assert_eq!(edu["class"], "00ff00");
    assert_eq!(edu["vendor_name"], "Technical Corp.");
    assert_eq!(edu["device_name"], "Edu device");
    assert_eq!(edu["class_name"], "Unclassified device");
    assert_eq!(edu["driver"], Value::Null);
    assert_eq!(edu["numa_node"], 0);
    assert_eq!(edu["iommu_group"], 3);
    assert_eq!(edu["config_size"], 256);
    assert_eq!(
        edu["iommu_group_members"],
        json!([{"address": EDU, "vendor_id": "1234", "device_id": "11e8", "driver": null}])
    );

    let nvme = f.json(NVME);
    assert_eq!(nvme["driver"], "nvme");
    assert_eq!(nvme["class_name"], "Non-Volatile memory controller");
    assert_eq!(nvme["numa_node"], Value::Null, "-1 means no NUMA affinity");

    let nic = f.json(NIC);
    assert_eq!(nic["numa_node"], 1);
    assert_eq!(
        nic["iommu_group_members"],
        json!([
            {"address": NIC, "vendor_id": "8086", "device_id": "1521", "driver": "igb"},
            {"address": NIC_1, "vendor_id": "8086", "device_id": "1521", "driver": "vfio-pci"},
        ])
    );
}

#[test]
fn bars_are_decoded() {
    let f = fixture();
    let edu = f.json(EDU);
    assert_eq!(
        edu["bars"],
        json!([{"index": 0, "type": "memory", "address_bits": 32, "prefetchable": false,
                "start": 0xfea0_0000u64, "size": 1 << 20, "mmap": null}])
    );
    assert_eq!(edu["rom"], Value::Null);

    let nvme = f.json(NVME);
    let bars = nvme["bars"].as_array().unwrap();
    assert_eq!(bars.len(), 1, "the upper half of a 64-bit BAR is not a BAR");
    assert_eq!(bars[0]["address_bits"], 64);
    assert_eq!(bars[0]["size"], 16 * 1024);

    let nic = f.json(NIC);
    let bars = nic["bars"].as_array().unwrap();
    let summary: Vec<_> = bars
        .iter()
        .map(|b| {
            (
                b["index"].as_u64().unwrap(),
                b["type"].as_str().unwrap().to_owned(),
                b["address_bits"].as_u64(),
                b["prefetchable"].as_bool().unwrap(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, "memory".into(), Some(64), true, 128 * 1024),
            (2, "io".into(), None, false, 32),
            (3, "memory".into(), Some(32), false, 16 * 1024),
        ]
    );
    assert_eq!(bars[0]["start"], 0x3800_0000_0000u64);
    assert!(
        bars.iter().all(|b| b["mmap"].is_null()),
        "unknown without VFIO"
    );
    assert_eq!(
        nic["rom"],
        json!({"start": 0xfe00_0000u64, "size": 512 * 1024})
    );
}

#[test]
fn capabilities_and_interrupts_come_from_config_space() {
    let f = fixture();
    let edu = f.json(EDU);
    assert_eq!(
        edu["capabilities"],
        json!([{"offset": 0x40, "id": "05", "extended": false, "version": null, "name": "MSI"}])
    );
    assert_eq!(
        edu["interrupts"],
        json!({"intx_pin": "INTA", "msi_vectors": 1, "msi_address_64": true,
               "msi_per_vector_masking": false, "msix_table_size": 0,
               "msix_table": null, "msix_pba": null})
    );

    let nvme = f.json(NVME);
    let caps: Vec<(u64, &str, Option<&str>)> = nvme["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["offset"].as_u64().unwrap(),
                c["id"].as_str().unwrap(),
                c["name"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        caps,
        vec![
            (0x40, "01", Some("Power Management")),
            (0x60, "11", Some("MSI-X")),
            (0x80, "10", Some("PCI Express")),
            (0x100, "0001", Some("Advanced Error Reporting")),
            (0x148, "0003", Some("Device Serial Number")),
        ]
    );
    assert_eq!(nvme["capabilities"][3]["extended"], true);
    assert_eq!(nvme["capabilities"][3]["version"], 2);
    assert_eq!(nvme["interrupts"]["msi_vectors"], 0);
    assert_eq!(nvme["interrupts"]["msix_table_size"], 65);
    assert_eq!(
        nvme["interrupts"]["msix_table"],
        json!({"bar": 0, "offset": 0x2000})
    );
    assert_eq!(
        nvme["interrupts"]["msix_pba"],
        json!({"bar": 0, "offset": 0x3000})
    );

    let nic = f.json(NIC);
    let i = &nic["interrupts"];
    assert_eq!(i["intx_pin"], "INTB");
    assert_eq!(i["msi_vectors"], 8);
    assert_eq!(i["msi_per_vector_masking"], true);
    assert_eq!(i["msix_table_size"], 10);
    assert_eq!(i["msix_table"], json!({"bar": 3, "offset": 0}));
    let unnamed = &nic["capabilities"][4];
    assert_eq!(unnamed["id"], "42");
    assert_eq!(unnamed["name"], Value::Null);
}

#[test]
fn short_config_space_leaves_capabilities_unknown() {
    let f = fixture();
    let nic1 = f.json(NIC_1);
    assert_eq!(nic1["config_size"], 64);
    assert_eq!(nic1["capabilities"], Value::Null);
    assert_eq!(nic1["interrupts"]["intx_pin"], "none");
    assert_eq!(nic1["interrupts"]["msi_vectors"], Value::Null);
    assert_eq!(nic1["interrupts"]["msix_table_size"], Value::Null);
    assert_eq!(nic1["bars"], json!([]));
    let text = f.text(NIC_1);
    assert!(
        text.contains("64 bytes readable (all of it needs root)"),
        "{text}"
    );
    assert!(
        text.contains("unknown: the capability list is not readable"),
        "{text}"
    );
}

#[test]
fn vfio_section_says_why_it_is_missing() {
    let f = fixture();
    let unavailable = |reason: &str, message: &str| {
        json!({"available": false, "reason": reason, "message": message,
               "regions": null, "irqs": null, "reset_supported": null})
    };
    assert_eq!(
        f.json(EDU)["vfio"],
        unavailable(
            "not_bound_to_vfio_pci",
            "not bound to vfio-pci (no driver): `usrdrv bind 0000:00:03.0`, then ask again"
        )
    );
    assert_eq!(
        f.json(NVME)["vfio"]["message"],
        "not bound to vfio-pci (bound to nvme): `usrdrv bind 0000:00:04.0`, then ask again"
    );
    // Bound to vfio-pci, but its group shares igb: VFIO would refuse it.
    let nic1 = f.json(NIC_1);
    assert_eq!(nic1["vfio"]["reason"], "group_not_viable");
    assert!(
        nic1["vfio"]["message"]
            .as_str()
            .unwrap()
            .contains("0000:00:05.0 is bound to igb"),
        "{}",
        nic1["vfio"]
    );
    // Without the igb function, it is usable, but a fake tree is never opened.
    let fake = FakeSysfs::new();
    fake.add(NIC_1, 0x8086, 0x1521, 0x020000, Some("vfio-pci"), Some(5));
    let out = usrdrv(fake.root(), &f.pci_ids, &[NIC_1, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("usrdrv info --json prints JSON");
    assert_eq!(v["vfio"]["reason"], "not_system_sysfs");
    let text = f.text(EDU);
    assert!(text.contains("\nVFIO\n  not bound to vfio-pci"), "{text}");
}

#[test]
fn no_iommu_group() {
    let f = fixture();
    f.fake
        .add("0000:00:06.0", 0x1234, 0x11e8, 0x00ff00, None, None);
    let v = f.json("00:06.0");
    assert_eq!(
        v["address"], "0000:00:06.0",
        "the short form means domain 0"
    );
    assert_eq!(v["iommu_group"], Value::Null);
    assert_eq!(v["iommu_group_members"], Value::Null);
    assert_eq!(v["vfio"]["reason"], "no_iommu_group");
}

#[test]
fn bad_input_fails_with_a_message() {
    let f = fixture();
    let out = f.run(&["03:00"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DDDD:BB:DD.F"), "{err}");
    assert!(err.starts_with("usrdrv: error: "), "{err}");
    assert!(out.stdout.is_empty());

    let out = f.run(&["0000:00:1f.7", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no PCI device at 0000:00:1f.7"), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn text_layout() {
    let f = fixture();
    let expected = "\
0000:00:03.0  1234:11e8  Technical Corp. Edu device
class         00ff00 (Unclassified device)
driver        none
NUMA node     0
IOMMU group   3

BARs
  BAR  TYPE           SIZE   START       PREFETCHABLE  MMAP
  0    memory 32-bit  1 MiB  0xfea00000  no            unknown
  (MMAP comes from VFIO: unknown unless the device is open through vfio-pci)

Capabilities
  OFFSET  ID    NAME
  0x040   0x05  MSI

Interrupts
  KIND   SUPPORTED  DETAIL
  INTx   yes        pin INTA
  MSI    yes        1 vector, 64-bit address, no per-vector masking
  MSI-X  no

IOMMU group 3
  ADDRESS       ID         DRIVER  NAME
  0000:00:03.0  1234:11e8  none    (this device)

VFIO
  not bound to vfio-pci (no driver): `usrdrv bind 0000:00:03.0`, then ask again
";
    assert_eq!(f.text(EDU), expected);
    let nic = f.text(NIC);
    for line in [
        "  0    memory 64-bit  128 KiB  0x380000000000  yes           unknown\n",
        "  2    I/O            32 B     0xe000          no            unknown\n",
        "  ROM  expansion ROM  512 KiB  0xfe000000      -             -\n",
        "  0x100   0x0001 v2  Advanced Error Reporting\n",
        "  0x0e0   0x42       unknown\n",
        "  MSI    yes        8 vectors, 64-bit address, per-vector masking\n",
        "  MSI-X  yes        table size 10, table in BAR3 at 0x0, PBA in BAR3 at 0x2000\n",
        "  0000:00:05.1  8086:1521  vfio-pci  Intel Corporation I350 Gigabit Network Connection\n",
    ] {
        assert!(nic.contains(line), "missing {line:?} in\n{nic}");
    }
}

/// The JSON of a fixed tree, compared with `tests/snapshots/info.json`: a
/// change in shape or meaning fails here (and needs a new schema version if it
/// breaks readers). `UPDATE_SNAPSHOTS=1` rewrites the file.
#[test]
fn json_schema_snapshot() {
    let f = fixture();
    let out = f.run(&[NIC, "--json"]);
    assert!(out.status.success());
    let actual = String::from_utf8(out.stdout).expect("text output is UTF-8");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/info.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (UPDATE_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "usrdrv info --json changed: if on purpose, rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}
