//! `usrdrv doctor` against fake sysfs, procfs and devfs trees: the real
//! binary, pointed at them with the hidden `--sysfs`, `--procfs` and
//! `--devfs` options.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use usrdrv::pci::fake_sysfs::FakeSysfs;

const CHECKS: [&str; 10] = [
    "iommu",
    "usrdma",
    "lockdown",
    "interrupt-remapping",
    "vfio-modules",
    "dev-vfio",
    "user",
    "memlock",
    "hugepages",
    "devices",
];

const IR_INTERRUPTS: &str = "\
            CPU0       CPU1
   0:         44          0   IO-APIC   2-edge      timer
   9:          0          0  IR-IO-APIC    9-fasteoi   acpi
  24:          0          0  DMAR-MSI    0-edge      dmar0
  25:          3          0  IR-PCI-MSIX-0000:00:04.0    0-edge      nvme0q0
  26:          0          0  IR-PCI-MSI 65536-edge      aerdrv
";

const PLAIN_INTERRUPTS: &str = "\
            CPU0       CPU1
   0:         44          0   IO-APIC   2-edge      timer
   9:          0          0   IO-APIC   9-fasteoi   acpi
  25:          3          0   PCI-MSIX-0000:00:04.0    0-edge      nvme0q0
";

/// CapEff of root: every capability, CAP_IPC_LOCK (bit 14) and
/// CAP_SYS_RAWIO (bit 17) among them.
const ALL_CAPS: &str = "000001ffffffffff";

/// A device bound to usrdma on the machine without an IOMMU.
const ON_USRDMA: &str = "0000:00:05.0";
const USRDMA_STATS: &str = "opened 0\nbuffers 0\nbuffer_bytes 0\nuser_mappings 0\npinned_pages 0\nbounce_bytes 0\nirqs 0\nirq_count 0\n";

fn write(path: &Path, content: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("create a fake directory");
    fs::write(path, content).expect("write a fake file");
}

/// A fake machine: sysfs from `FakeSysfs`, procfs and devfs beside it.
struct Machine {
    sys: FakeSysfs,
    rest: tempfile::TempDir,
}

impl Machine {
    /// A machine where user-space drivers run: Intel IOMMU on, interrupts
    /// remapped, VFIO loaded, edu bound to vfio-pci in group 3 with its node,
    /// CAP_IPC_LOCK, 512 hugepages.
    fn healthy() -> Self {
        let m = Self {
            sys: FakeSysfs::new(),
            rest: tempfile::tempdir().expect("make a temporary directory"),
        };
        m.sys.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0x00ff00,
            Some("vfio-pci"),
            Some(3),
        );
        m.sys.add(
            "0000:00:04.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(4),
        );
        // QEMU's intel-iommu with intremap=on: ecap bit 3 (IR) set.
        m.sys_file("class/iommu/dmar0/intel-iommu/ecap", "12008c22260286f\n");
        m.sys_file("class/iommu/dmar0/intel-iommu/cap", "d2008c22260286\n");
        m.sys_file("firmware/acpi/tables/DMAR", "");
        m.sys_file("firmware/acpi/tables/APIC", "");
        m.modules(true);
        m.sys_file("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "512\n");
        m.sys_file(
            "kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "500\n",
        );
        m.sys_file(
            "kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "0\n",
        );
        m.sys_file(
            "kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
            "0\n",
        );
        m.proc_file(
            "cmdline",
            "BOOT_IMAGE=/vmlinuz-6.1.0 root=/dev/sda1 ro quiet intel_iommu=on iommu=pt\n",
        );
        m.proc_file("interrupts", IR_INTERRUPTS);
        m.caps(ALL_CAPS);
        m.dev_node("vfio/vfio", 0o666);
        m.dev_node("vfio/3", 0o600);
        m
    }

    /// The same machine with the IOMMU off (as `intel_iommu=off` on a board
    /// whose firmware has VT-d off): no groups, no units, no DMAR table, no
    /// remapped interrupts, and vfio-pci holds no device (it refuses them).
    fn without_iommu() -> Self {
        let m = Self {
            sys: FakeSysfs::new(),
            rest: tempfile::tempdir().expect("make a temporary directory"),
        };
        m.sys
            .add("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, None, None);
        m.sys_file("firmware/acpi/tables/APIC", "");
        m.modules(true);
        m.sys_file("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n");
        m.sys_file("kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n");
        m.proc_file("cmdline", "console=ttyS0 intel_iommu=off\n");
        m.proc_file("interrupts", PLAIN_INTERRUPTS);
        m.caps(ALL_CAPS);
        m.dev_node("vfio/vfio", 0o666);
        m
    }

    /// Loads the usrdma module (its PCI driver appears), with no device bound.
    fn load_usrdma(&self) {
        self.sys.add_driver("usrdma");
    }

    /// Binds a second edu to usrdma (the module is loaded with it).
    fn bind_to_usrdma(&self) {
        self.sys
            .add_usrdma(ON_USRDMA, 0x1234, 0x11e8, "", USRDMA_STATS);
    }

    fn sys_file(&self, relative: &str, content: &str) {
        write(&self.sys.root().join(relative), content);
    }

    fn proc_file(&self, relative: &str, content: &str) {
        write(&self.proc().join(relative), content);
    }

    fn dev_node(&self, relative: &str, mode: u32) {
        let path = self.dev().join(relative);
        write(&path, "");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod a fake node");
    }

    fn caps(&self, cap_eff: &str) {
        self.proc_file(
            "self/status",
            &format!(
                "Name:\tusrdrv\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t{cap_eff}\nCapEff:\t{cap_eff}\n"
            ),
        );
    }

    /// Loads (or unloads) vfio, vfio_pci and vfio_iommu_type1.
    fn modules(&self, loaded: bool) {
        let module = self.sys.root().join("module");
        if loaded {
            self.sys_file("module/vfio/parameters/enable_unsafe_noiommu_mode", "N\n");
            self.sys_file("module/vfio_pci/parameters/ids", "\n");
            self.sys_file(
                "module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
                "N\n",
            );
        } else {
            for m in ["vfio", "vfio_pci", "vfio_iommu_type1"] {
                let _ = fs::remove_dir_all(module.join(m));
            }
            let _ = fs::remove_dir_all(self.sys.root().join("bus/pci/drivers/vfio-pci"));
            let _ = fs::remove_dir_all(self.dev().join("vfio"));
        }
    }

    fn proc(&self) -> PathBuf {
        self.rest.path().join("proc")
    }

    fn dev(&self) -> PathBuf {
        self.rest.path().join("dev")
    }

    fn command(&self, json: bool) -> Command {
        self.command_with(Path::new(env!("CARGO_BIN_EXE_usrdrv")), json)
    }

    fn command_with(&self, program: &Path, json: bool) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("doctor")
            .arg("--sysfs")
            .arg(self.sys.root())
            .arg("--procfs")
            .arg(self.proc())
            .arg("--devfs")
            .arg(self.dev())
            .args(["--color", "never"]);
        if json {
            cmd.arg("--json");
        }
        cmd
    }
}

/// The exit status and the parsed `--json` report.
fn run_json(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.output().expect("run usrdrv");
    (status(&out), parse(&out))
}

fn status(out: &Output) -> i32 {
    out.status.code().expect("usrdrv exited normally")
}

fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
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
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn a_healthy_machine_is_ready_and_every_check_is_ok() {
    let m = Machine::healthy();
    let (code, report) = run_json(&mut m.command(true));
    for f in report["findings"].as_array().unwrap() {
        assert_eq!(f["status"], "ok", "{f:#}");
        assert!(f["fix"].is_null(), "{f:#}");
    }
    assert_eq!(report["ready"], true);
    assert_eq!(code, 0);
    assert!(text(&finding(&report, "iommu")["summary"]).contains("2 IOMMU groups"));
    assert!(text(&finding(&report, "iommu")["summary"]).contains("dmar0"));
    assert!(text(&finding(&report, "interrupt-remapping")["summary"]).contains("IR-PCI-MSI"));
    assert!(text(&finding(&report, "devices")["summary"]).contains("0000:00:03.0 (group 3)"));
    assert!(
        text(&finding(&report, "hugepages")["summary"]).contains("500 of 512 2 MiB hugepages free")
    );
}

#[test]
fn the_json_report_has_the_documented_shape() {
    let m = Machine::healthy();
    m.sys_file("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n");
    let (_, report) = run_json(&mut m.command(true));
    let object = report.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["findings", "ready", "schema"]);
    assert_eq!(report["schema"], "usrdrv.doctor/1");
    assert!(report["ready"].is_boolean());
    let findings = report["findings"].as_array().unwrap();
    let checks: Vec<&str> = findings.iter().map(|f| text(&f["check"])).collect();
    assert_eq!(checks, CHECKS);
    for f in findings {
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["check", "fix", "status", "summary"], "{f:#}");
        assert!(
            ["ok", "warn", "fail"].contains(&text(&f["status"])),
            "{f:#}"
        );
        assert!(!text(&f["summary"]).is_empty(), "{f:#}");
        assert!(!text(&f["summary"]).contains('\n'), "{f:#}");
        // A fix exactly when there is something to fix.
        assert_eq!(f["fix"].is_null(), f["status"] == "ok", "{f:#}");
    }
}

#[test]
fn without_an_iommu_doctor_fails_and_says_how_to_turn_it_on() {
    let m = Machine::without_iommu();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ready"], false);
    let iommu = finding(&report, "iommu");
    assert_eq!(iommu["status"], "fail", "{iommu:#}");
    let summary = text(&iommu["summary"]);
    assert!(summary.contains("intel_iommu=off"), "{summary}");
    assert!(summary.contains("no ACPI DMAR or IVRS table"), "{summary}");
    let fix = text(&iommu["fix"]);
    assert!(fix.contains("intel_iommu=on"), "{fix}");
    assert!(
        fix.contains("replace intel_iommu=off with intel_iommu=on"),
        "{fix}"
    );
    assert!(fix.contains("GRUB_CMDLINE_LINUX"), "{fix}");
    assert!(fix.contains("firmware"), "{fix}");
    assert!(
        fix.contains("usrdrv bind ADDR --driver usrdma"),
        "the no-IOMMU alternative: {fix}"
    );
    // Nor is usrdma loaded: it says how to get it.
    let usrdma = finding(&report, "usrdma");
    assert_eq!(usrdma["status"], "fail", "{usrdma:#}");
    assert!(
        text(&usrdma["summary"]).starts_with("not loaded"),
        "{usrdma:#}"
    );
    let fix = text(&usrdma["fix"]);
    assert!(fix.contains("modprobe usrdma"), "{fix}");
    assert!(fix.contains("dkms install usrdma/0.1.0"), "{fix}");
    assert!(fix.contains("kmod/usrdma"), "{fix}");
    assert!(fix.contains("usrdrv bind ADDR --driver usrdma"), "{fix}");
    // Remapping goes with the IOMMU; the modules are there.
    assert_eq!(finding(&report, "interrupt-remapping")["status"], "fail");
    assert_eq!(finding(&report, "vfio-modules")["status"], "ok");
    let devices = finding(&report, "devices");
    assert_eq!(devices["status"], "warn");
    assert!(
        text(&devices["fix"]).contains("IOMMU on first"),
        "{devices:#}"
    );

    // allow_unsafe_interrupts cannot stand in for a missing IOMMU.
    m.sys_file(
        "module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1);
    assert_eq!(finding(&report, "interrupt-remapping")["status"], "fail");
}

#[test]
fn without_an_iommu_a_loaded_usrdma_makes_the_machine_ready() {
    let m = Machine::without_iommu();
    m.bind_to_usrdma();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ready"], true);
    for f in report["findings"].as_array().unwrap() {
        assert_ne!(f["status"], "fail", "{f:#}");
    }
    let iommu = finding(&report, "iommu");
    assert_eq!(iommu["status"], "warn", "{iommu:#}");
    let summary = text(&iommu["summary"]);
    assert!(summary.contains("intel_iommu=off"), "{summary}");
    assert!(summary.contains("not isolated"), "{summary}");
    assert!(summary.contains("all memory"), "{summary}");
    let fix = text(&iommu["fix"]);
    assert!(fix.contains("intel_iommu=on"), "{fix}");
    assert!(!fix.contains("--driver usrdma"), "usrdma is in use: {fix}");
    let usrdma = finding(&report, "usrdma");
    assert_eq!(usrdma["status"], "ok", "{usrdma:#}");
    assert!(usrdma["fix"].is_null(), "{usrdma:#}");
    assert!(
        text(&usrdma["summary"]).contains(&format!("loaded, 1 device bound: {ON_USRDMA}")),
        "{usrdma:#}"
    );
    // Only VFIO needs remapping: a warning that says so.
    let ir = finding(&report, "interrupt-remapping");
    assert_eq!(ir["status"], "warn", "{ir:#}");
    assert!(
        text(&ir["summary"]).contains("matters only for VFIO"),
        "{ir:#}"
    );
    assert_eq!(finding(&report, "vfio-modules")["status"], "ok");
    assert_eq!(finding(&report, "dev-vfio")["status"], "ok");
    let user = finding(&report, "user");
    assert_eq!(user["status"], "ok", "{user:#}");
    assert!(text(&user["summary"]).contains("CAP_SYS_RAWIO"), "{user:#}");
    let devices = finding(&report, "devices");
    assert_eq!(devices["status"], "ok", "{devices:#}");
    assert!(
        text(&devices["summary"]).contains(&format!("bound to usrdma: {ON_USRDMA}")),
        "{devices:#}"
    );

    // The text verdict agrees.
    let out = m.command(false).output().unwrap();
    assert_eq!(status(&out), 0);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("ready: user-space drivers can run here ("),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warn") && l.split_whitespace().nth(1) == Some("iommu")),
        "{stdout}"
    );
}

#[test]
fn without_an_iommu_missing_vfio_does_not_matter_when_usrdma_is_loaded() {
    let m = Machine::without_iommu();
    m.load_usrdma();
    m.modules(false);
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    let modules = finding(&report, "vfio-modules");
    assert_eq!(modules["status"], "ok", "{modules:#}");
    assert!(
        text(&modules["summary"]).starts_with("not loaded: vfio, vfio_pci, vfio_iommu_type1"),
        "{modules:#}"
    );
    assert!(
        text(&modules["summary"]).contains("only needed with an IOMMU"),
        "{modules:#}"
    );
    let dev = finding(&report, "dev-vfio");
    assert_eq!(dev["status"], "ok", "{dev:#}");
    assert!(text(&dev["summary"]).contains("missing"), "{dev:#}");
    // No device on usrdma yet: the module says so, devices says how.
    let usrdma = finding(&report, "usrdma");
    assert_eq!(usrdma["status"], "ok", "{usrdma:#}");
    assert!(
        text(&usrdma["summary"]).contains("no device bound yet"),
        "{usrdma:#}"
    );
    let devices = finding(&report, "devices");
    assert_eq!(devices["status"], "warn", "{devices:#}");
    assert!(
        text(&devices["fix"]).contains("usrdrv bind ADDR --driver usrdma"),
        "{devices:#}"
    );
}

#[test]
fn without_an_iommu_usrdma_needs_cap_sys_rawio() {
    let m = Machine::without_iommu();
    m.bind_to_usrdma();
    // CAP_IPC_LOCK only: no CAP_SYS_RAWIO.
    m.caps("0000000000004000");
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1, "{report:#}");
    let user = finding(&report, "user");
    assert_eq!(user["status"], "fail", "{user:#}");
    assert!(text(&user["summary"]).contains("CAP_SYS_RAWIO"), "{user:#}");
    assert!(text(&user["fix"]).contains("as root"), "{user:#}");
    assert_eq!(finding(&report, "iommu")["status"], "warn");
}

#[test]
fn with_the_iommu_on_usrdma_is_not_needed() {
    let m = Machine::healthy();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    let usrdma = finding(&report, "usrdma");
    assert_eq!(usrdma["status"], "ok", "{usrdma:#}");
    assert!(usrdma["fix"].is_null(), "{usrdma:#}");
    assert!(
        text(&usrdma["summary"]).contains("not loaded (only needed without an IOMMU"),
        "{usrdma:#}"
    );

    // Loaded anyway, with a device on it: fine, and VFIO is recommended.
    m.bind_to_usrdma();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    let usrdma = finding(&report, "usrdma");
    assert_eq!(usrdma["status"], "ok", "{usrdma:#}");
    let summary = text(&usrdma["summary"]);
    assert!(
        summary.contains(&format!("1 device bound: {ON_USRDMA}")),
        "{summary}"
    );
    assert!(summary.contains("prefer VFIO"), "{summary}");
    assert_eq!(finding(&report, "iommu")["status"], "ok");
    let devices = text(&finding(&report, "devices")["summary"]);
    assert!(devices.contains("0000:00:03.0 (group 3)"), "{devices}");
    assert!(
        devices.contains(&format!("bound to usrdma: {ON_USRDMA}")),
        "{devices}"
    );

    // Missing VFIO modules still fail with the IOMMU on, usrdma or not.
    m.modules(false);
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(finding(&report, "vfio-modules")["status"], "fail");
}

#[test]
fn firmware_with_vt_d_but_no_kernel_option_asks_for_intel_iommu_on() {
    let m = Machine::without_iommu();
    m.sys_file("firmware/acpi/tables/DMAR", "");
    m.proc_file("cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n");
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1);
    let iommu = finding(&report, "iommu");
    let summary = text(&iommu["summary"]);
    assert!(
        summary.contains("Intel VT-d (ACPI DMAR table)"),
        "{summary}"
    );
    assert!(
        summary.contains("intel_iommu=on is not on the kernel command line"),
        "{summary}"
    );
    let fix = text(&iommu["fix"]);
    assert!(fix.contains("intel_iommu=on"), "{fix}");
    assert!(!fix.contains("remove"), "{fix}");
}

#[test]
fn interrupt_remapping_turned_off_on_the_command_line_fails() {
    let m = Machine::healthy();
    m.proc_file("cmdline", "root=/dev/sda1 intel_iommu=on intremap=off\n");
    m.proc_file("interrupts", PLAIN_INTERRUPTS);
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(finding(&report, "iommu")["status"], "ok");
    let ir = finding(&report, "interrupt-remapping");
    assert_eq!(ir["status"], "fail", "{ir:#}");
    assert!(text(&ir["summary"]).contains("intremap=off"), "{ir:#}");
    assert!(text(&ir["summary"]).contains("EPERM"), "{ir:#}");
    assert!(text(&ir["fix"]).contains("remove intremap=off"), "{ir:#}");

    // allow_unsafe_interrupts=Y lets VFIO run without it: a warning.
    m.sys_file(
        "module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
        "Y\n",
    );
    let (code, report) = run_json(&mut m.command(true));
    let ir = finding(&report, "interrupt-remapping");
    assert_eq!(ir["status"], "warn", "{ir:#}");
    assert!(
        text(&ir["summary"]).contains("allow_unsafe_interrupts=Y"),
        "{ir:#}"
    );
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn an_iommu_without_interrupt_remapping_support_fails() {
    let m = Machine::healthy();
    m.sys_file("class/iommu/dmar0/intel-iommu/ecap", "f0205e7\n");
    m.proc_file("interrupts", PLAIN_INTERRUPTS);
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1);
    let ir = finding(&report, "interrupt-remapping");
    assert_eq!(ir["status"], "fail", "{ir:#}");
    assert!(
        text(&ir["summary"]).contains("does not support it"),
        "{ir:#}"
    );
    assert!(
        text(&ir["fix"]).contains("allow_unsafe_interrupts=1"),
        "{ir:#}"
    );
}

#[test]
fn missing_vfio_modules_fail_with_modprobe() {
    let m = Machine::healthy();
    m.modules(false);
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1, "{report:#}");
    let modules = finding(&report, "vfio-modules");
    assert_eq!(modules["status"], "fail", "{modules:#}");
    assert!(
        text(&modules["summary"]).contains("vfio, vfio_pci, vfio_iommu_type1"),
        "{modules:#}"
    );
    assert!(
        text(&modules["fix"]).contains("modprobe vfio-pci"),
        "{modules:#}"
    );
    assert!(
        text(&modules["fix"]).contains("/etc/modules-load.d/"),
        "{modules:#}"
    );
    let dev = finding(&report, "dev-vfio");
    assert_eq!(dev["status"], "fail", "{dev:#}");
    assert!(text(&dev["fix"]).contains("modprobe vfio-pci"), "{dev:#}");
}

#[test]
fn only_vfio_iommu_type1_missing_names_it() {
    let m = Machine::healthy();
    fs::remove_dir_all(m.sys.root().join("module/vfio_iommu_type1")).unwrap();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 1);
    let modules = finding(&report, "vfio-modules");
    assert!(
        text(&modules["summary"]).starts_with("not loaded: vfio_iommu_type1"),
        "{modules:#}"
    );
    assert!(
        text(&modules["fix"]).contains("modprobe vfio_iommu_type1"),
        "{modules:#}"
    );
}

#[test]
fn no_hugepages_is_a_warning_not_a_failure() {
    let m = Machine::healthy();
    m.sys_file("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n");
    m.sys_file("kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n");
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ready"], true);
    let huge = finding(&report, "hugepages");
    assert_eq!(huge["status"], "warn", "{huge:#}");
    assert!(text(&huge["fix"]).contains("nr_hugepages"), "{huge:#}");
    assert!(text(&huge["fix"]).contains("4 KiB pages"), "{huge:#}");

    // Without the sysfs directory, /proc/meminfo tells.
    fs::remove_dir_all(m.sys.root().join("kernel/mm/hugepages")).unwrap();
    m.proc_file(
        "meminfo",
        "MemTotal:  1000000 kB\nHugePages_Total:      64\nHugePages_Free:       64\nHugepagesize:       2048 kB\n",
    );
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0);
    assert_eq!(finding(&report, "hugepages")["status"], "ok", "{report:#}");
}

#[test]
fn no_device_bound_yet_is_fine_with_a_note() {
    let m = Machine::healthy();
    fs::remove_file(m.dev().join("vfio/3")).unwrap();
    // edu is back on no driver.
    fs::remove_file(m.sys.device_dir("0000:00:03.0").join("driver")).unwrap();
    let (code, report) = run_json(&mut m.command(true));
    assert_eq!(code, 0, "{report:#}");
    let dev = finding(&report, "dev-vfio");
    assert_eq!(dev["status"], "ok", "{dev:#}");
    assert!(
        text(&dev["summary"]).contains("usrdrv bind ADDR"),
        "{dev:#}"
    );
    assert_eq!(finding(&report, "devices")["status"], "warn");
}

/// Sets this process's `RLIMIT_MEMLOCK` to 1 MiB (soft and hard).
fn lower_memlock_to_1_mib() -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: 1 << 20,
        rlim_max: 1 << 20,
    };
    // SAFETY: setrlimit reads one `rlimit` through the pointer, which points
    // at a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs doctor as someone who is not root and has no CAP_IPC_LOCK, with a
/// 1 MiB locked-memory limit, on a machine whose group node is root's.
#[test]
fn a_user_without_access_or_memlock_is_told_what_to_change() {
    let m = Machine::healthy();
    m.caps("0000000000000000");
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let program = if root {
        // Run as nobody: the trees and a copy of the binary must be reachable.
        for dir in [m.sys.root(), m.rest.path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let copy = m.rest.path().join("usrdrv");
        fs::copy(env!("CARGO_BIN_EXE_usrdrv"), &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        copy
    } else {
        // Not root: a node without permissions is unusable even for its owner.
        fs::set_permissions(m.dev().join("vfio/3"), fs::Permissions::from_mode(0o000)).unwrap();
        PathBuf::from(env!("CARGO_BIN_EXE_usrdrv"))
    };
    let mut cmd = m.command_with(&program, true);
    if root {
        cmd.uid(65534).gid(65534);
    }
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls setrlimit, which is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(lower_memlock_to_1_mib);
    }
    let (code, report) = run_json(&mut cmd);
    assert_eq!(code, 1, "{report:#}");
    let dev = finding(&report, "dev-vfio");
    assert_eq!(dev["status"], "fail", "{dev:#}");
    assert!(text(&dev["summary"]).contains("vfio/3"), "{dev:#}");
    assert!(text(&dev["fix"]).contains("chown $USER"), "{dev:#}");
    assert!(text(&dev["fix"]).contains("udev"), "{dev:#}");
    let user = finding(&report, "user");
    assert_eq!(user["status"], "fail", "{user:#}");
    assert!(text(&user["summary"]).contains("not root"), "{user:#}");
    let memlock = finding(&report, "memlock");
    assert_eq!(memlock["status"], "warn", "{memlock:#}");
    assert!(text(&memlock["summary"]).contains("1 MiB"), "{memlock:#}");
    let fix = text(&memlock["fix"]);
    assert!(fix.contains("ulimit -l"), "{fix}");
    assert!(fix.contains("LimitMEMLOCK=infinity"), "{fix}");
    assert!(fix.contains("/etc/security/limits.conf"), "{fix}");
}

#[test]
fn text_output_keeps_its_columns_aligned() {
    let m = Machine::without_iommu();
    let out = m.command(false).output().unwrap();
    assert_eq!(status(&out), 1);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains('\x1b'), "no colour when not a terminal");
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    let check_col = header.find("CHECK").unwrap();
    let finding_col = header.find("FINDING").unwrap();
    assert!(header.starts_with("STATUS"), "{header}");
    let mut rows = 0;
    let mut fixes = 0;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') {
            // A fix, under the FINDING column.
            assert_eq!(line.find("fix: "), Some(finding_col), "{line:?}\n{stdout}");
            assert!(line[..finding_col].trim().is_empty(), "{line:?}");
            fixes += 1;
            continue;
        }
        rows += 1;
        let status = line.split_whitespace().next().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{line:?}");
        let at = |col: usize| {
            let bytes = line.as_bytes();
            bytes[col - 1] == b' ' && bytes[col] != b' '
        };
        assert!(
            at(check_col) && at(finding_col),
            "misaligned: {line:?}\n{stdout}"
        );
        let check = line[check_col..].split_whitespace().next().unwrap();
        assert_eq!(check, CHECKS[rows - 1], "{stdout}");
    }
    assert_eq!(rows, CHECKS.len(), "{stdout}");
    assert!(fixes >= 2, "{stdout}");
    let verdict = lines.next().unwrap();
    assert!(verdict.starts_with("not ready: "), "{verdict}");

    let healthy = Machine::healthy().command(false).output().unwrap();
    assert_eq!(status(&healthy), 0);
    let stdout = String::from_utf8(healthy.stdout).unwrap();
    assert!(!stdout.contains("fix: "), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("ready: user-space drivers can run here"),
        "{stdout}"
    );
}
