//! The checks of `usrdrv doctor`. Each reads what Linux exposes and decides
//! `ok`, `warn` (user-space drivers run, but something is worth fixing) or
//! `fail` (they cannot run until it is fixed), with the fix in words.
//!
//! Which backend can run decides how some findings weigh (see [`Backend`]):
//! with the IOMMU on, drivers use VFIO and every VFIO check counts; without
//! one, only the usrdma module runs them, so the `iommu` finding is a warning
//! when usrdma is loaded (devices are not isolated) and the checks that only
//! VFIO needs cannot fail the verdict.

use std::path::{Path, PathBuf};

use usrdrv::pci::{PciAddress, SysfsError, VFIO_PCI_DRIVER};
use usrdrv::usrdma::{USRDMA_DRIVER, listing};

use super::system::{self, CAP_IPC_LOCK, CAP_SYS_RAWIO, Identity, Ownership, System};
use super::{Finding, Status};
use crate::cmd::list::readiness;
use crate::context::Context;

/// Below this soft `RLIMIT_MEMLOCK`, drivers with sizeable DMA buffers fail.
pub const MEMLOCK_WANTED: u64 = 64 << 20;
/// The page size the kernel pins in: below it nothing can be mapped for DMA.
const PAGE: u64 = 4096;
/// The hugepage size usrdrv allocates DMA memory in.
const HUGEPAGE_KB: u64 = 2048;
/// Intel VT-d extended capability bit: interrupt remapping supported.
const ECAP_IR: u64 = 1 << 3;

/// How to change the kernel command line.
const GRUB_STEPS: &str = "edit GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub \
     (Debian, Ubuntu) or grub2-mkconfig -o /boot/grub2/grub.cfg (Fedora, RHEL), and reboot";

/// Runs every check, in report order.
pub fn all(ctx: &Context) -> Vec<Finding> {
    let sys = System::new(ctx);
    let cmdline = Cmdline::parse(&system::read(&sys.proc("cmdline")).unwrap_or_default());
    let iommu = IommuFacts::read(&sys);
    let usrdma = UsrdmaFacts::read(ctx, &sys);
    let backend = Backend::of(&iommu, &usrdma);
    let me = Identity::current();
    let nodes = VfioNodes::read(&sys);
    vec![
        iommu_check(&iommu, &cmdline, backend),
        usrdma_check(&usrdma, backend),
        lockdown(&sys, backend),
        vfio_only(backend, interrupt_remapping(&sys, &iommu, &cmdline)),
        vfio_modules(&sys, backend),
        vfio_only(backend, dev_vfio(&nodes, backend)),
        user(&sys, &nodes, &me, backend),
        memlock(&sys, &me),
        hugepages(&sys),
        devices(ctx, backend, &usrdma),
    ]
}

/// Which backend user-space drivers can use here, as the IOMMU and usrdma
/// checks decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The IOMMU is on: drivers use VFIO (usrdma may be loaded too).
    Vfio,
    /// No IOMMU, but the usrdma module is loaded: drivers use usrdma (root
    /// only, devices not isolated); what only VFIO needs cannot fail.
    Usrdma,
    /// No IOMMU and no usrdma: nothing runs until one of them is fixed.
    Neither,
}

impl Backend {
    fn of(iommu: &IommuFacts, usrdma: &UsrdmaFacts) -> Self {
        if iommu.has_groups() {
            Self::Vfio
        } else if usrdma.loaded {
            Self::Usrdma
        } else {
            Self::Neither
        }
    }
}

/// What a check that only VFIO needs weighs: with [`Backend::Usrdma`] VFIO
/// cannot run here anyway (it needs the IOMMU), so its failure is a warning
/// saying so; otherwise the finding as it is.
fn vfio_only(backend: Backend, mut f: Finding) -> Finding {
    if backend == Backend::Usrdma && f.status == Status::Fail {
        f.status = Status::Warn;
        f.summary.push_str(
            "; this matters only for VFIO, which cannot run here without an IOMMU anyway: \
             drivers run through usrdma",
        );
    }
    f
}

fn finding(check: &'static str, status: Status, summary: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        status,
        summary,
        fix,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A size in the largest binary unit that divides it.
pub fn bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

// ---------------------------------------------------------------------------
// The kernel command line.

/// The kernel command line (`/proc/cmdline`), up to `--` (the rest is init's).
#[derive(Debug, Default, Clone)]
pub struct Cmdline {
    words: Vec<String>,
}

impl Cmdline {
    /// Splits a command line into words.
    pub fn parse(text: &str) -> Self {
        Self {
            words: text
                .split_whitespace()
                .take_while(|w| *w != "--")
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Every comma-separated option given to `key=`, in order, over all
    /// occurrences (the kernel parses each occurrence in turn).
    pub fn options(&self, key: &str) -> Vec<&str> {
        self.words
            .iter()
            .filter_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split(','))
            .filter(|o| !o.is_empty())
            .collect()
    }

    /// The last of `choices` given to `key` (later ones override earlier).
    pub fn last_of(&self, key: &str, choices: &[&str]) -> Option<String> {
        self.options(key)
            .into_iter()
            .rev()
            .find(|o| choices.contains(o))
            .map(str::to_owned)
    }

    /// Whether a bare word (`nointremap`) is present.
    pub fn has_word(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// The words that turn the IOMMU off.
    pub fn iommu_disabled_by(&self) -> Vec<String> {
        let mut words = Vec::new();
        if self.last_of("intel_iommu", &["on", "off"]).as_deref() == Some("off") {
            words.push("intel_iommu=off".to_owned());
        }
        if self.options("amd_iommu").contains(&"off") {
            words.push("amd_iommu=off".to_owned());
        }
        if self.options("iommu").contains(&"off") {
            words.push("iommu=off".to_owned());
        }
        words
    }

    /// The words that ask for the IOMMU or shape it, for the report.
    pub fn iommu_words(&self) -> Vec<&str> {
        self.words
            .iter()
            .map(String::as_str)
            .filter(|w| {
                ["intel_iommu=", "amd_iommu=", "iommu=", "iommu.passthrough="]
                    .iter()
                    .any(|k| w.starts_with(k))
            })
            .collect()
    }

    /// Whether host devices bypass translation (`iommu=pt`,
    /// `iommu.passthrough=1`). VFIO devices are translated regardless.
    pub fn passthrough(&self) -> bool {
        self.last_of("iommu", &["pt", "nopt"]).as_deref() == Some("pt")
            || self
                .options("iommu.passthrough")
                .last()
                .is_some_and(|v| matches!(*v, "1" | "y" | "Y" | "on"))
    }

    /// The word that turns interrupt remapping off, if any.
    pub fn intremap_disabled_by(&self) -> Option<String> {
        if self.last_of("intremap", &["on", "off"]).as_deref() == Some("off") {
            Some("intremap=off".to_owned())
        } else if self.has_word("nointremap") {
            Some("nointremap".to_owned())
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// IOMMU.

/// What sysfs says about IOMMUs.
#[derive(Debug, Default, Clone)]
pub struct IommuFacts {
    /// How many IOMMU groups exist (`None`: no `kernel/iommu_groups` at all).
    pub groups: Option<usize>,
    /// The registered IOMMU units (`class/iommu`: dmar0, ivhd0, ...).
    pub units: Vec<String>,
    /// Intel units and whether they support interrupt remapping (ecap IR).
    pub intel_ir_support: Vec<(String, bool)>,
    /// The ACPI tables that describe an IOMMU (DMAR: Intel, IVRS: AMD);
    /// `None` when the ACPI tables cannot be listed.
    pub firmware_tables: Option<Vec<&'static str>>,
    /// Where the groups live, for messages.
    pub groups_dir: PathBuf,
}

impl IommuFacts {
    fn read(sys: &System<'_>) -> Self {
        let groups_dir = sys.sys("kernel/iommu_groups");
        let units = system::list_dir(&sys.sys("class/iommu")).unwrap_or_default();
        let intel_ir_support = units
            .iter()
            .filter(|u| u.starts_with("dmar"))
            .filter_map(|u| {
                let ecap =
                    system::read_value(&sys.sys(&format!("class/iommu/{u}/intel-iommu/ecap")))?;
                let ecap = u64::from_str_radix(ecap.trim_start_matches("0x"), 16).ok()?;
                Some((u.clone(), ecap & ECAP_IR != 0))
            })
            .collect();
        let firmware_tables = system::list_dir(&sys.sys("firmware/acpi/tables")).map(|tables| {
            ["DMAR", "IVRS"]
                .into_iter()
                .filter(|t| tables.iter().any(|have| have == t))
                .collect()
        });
        Self {
            groups: system::list_dir(&groups_dir).map(|g| g.len()),
            units,
            intel_ir_support,
            firmware_tables,
            groups_dir,
        }
    }

    fn has_groups(&self) -> bool {
        self.groups.unwrap_or(0) > 0
    }
}

fn table_vendor(table: &str) -> &'static str {
    if table == "DMAR" {
        "Intel VT-d"
    } else {
        "AMD-Vi"
    }
}

fn iommu_check(facts: &IommuFacts, cmdline: &Cmdline, backend: Backend) -> Finding {
    let words = cmdline.iommu_words();
    let cmdline_note = if words.is_empty() {
        "no IOMMU option on the kernel command line".to_owned()
    } else {
        format!("kernel command line: {}", words.join(" "))
    };
    if facts.has_groups() {
        let mut summary = format!(
            "on: {}",
            plural(facts.groups.unwrap_or(0), "IOMMU group", "IOMMU groups")
        );
        if !facts.units.is_empty() {
            summary.push_str(&format!(", units {}", facts.units.join(", ")));
        }
        summary.push_str(&format!(" ({cmdline_note})"));
        if cmdline.passthrough() {
            summary.push_str(
                "; passthrough mode: devices the host kernel drives bypass the IOMMU, \
                 devices given to VFIO are still translated",
            );
        }
        return finding("iommu", Status::Ok, summary, None);
    }

    let mut why = Vec::new();
    match facts.groups {
        None => why.push(format!(
            "the kernel has no IOMMU support ({} is missing)",
            facts.groups_dir.display()
        )),
        Some(_) => why.push("no IOMMU groups".to_owned()),
    }
    if !facts.units.is_empty() {
        why.push(format!(
            "units {} are registered but no device is in a group",
            facts.units.join(", ")
        ));
    }
    let disabled = cmdline.iommu_disabled_by();
    if !disabled.is_empty() {
        why.push(format!(
            "the kernel command line turns it off ({})",
            disabled.join(" ")
        ));
    }
    let firmware_has_one = match &facts.firmware_tables {
        Some(tables) if tables.is_empty() => {
            why.push(
                "the firmware reports none (no ACPI DMAR or IVRS table): VT-d/AMD-Vi is off in \
                 the firmware setup, or the machine has no IOMMU"
                    .to_owned(),
            );
            false
        }
        Some(tables) => {
            let names: Vec<String> = tables
                .iter()
                .map(|t| format!("{} (ACPI {t} table)", table_vendor(t)))
                .collect();
            let asked = if cmdline.last_of("intel_iommu", &["on", "off"]).as_deref() == Some("on") {
                String::new()
            } else if tables.contains(&"DMAR") {
                ", and intel_iommu=on is not on the kernel command line".to_owned()
            } else {
                String::new()
            };
            if disabled.is_empty() {
                why.push(format!(
                    "the firmware describes {} but the kernel did not turn it on{asked}",
                    names.join(" and ")
                ));
            }
            true
        }
        None => false,
    };
    if disabled.is_empty() && !firmware_has_one {
        why.push(cmdline_note);
    }
    let why = why.join("; ");

    let mut steps = Vec::new();
    if !firmware_has_one {
        steps.push("turn on VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup".to_owned());
    }
    let others: Vec<&str> = disabled
        .iter()
        .map(String::as_str)
        .filter(|w| *w != "intel_iommu=off")
        .collect();
    if !others.is_empty() {
        steps.push(format!(
            "remove {} from the kernel command line",
            others.join(" and ")
        ));
    }
    let intel = if disabled.iter().any(|w| w == "intel_iommu=off") {
        "replace intel_iommu=off with intel_iommu=on on the kernel command line"
    } else {
        "add intel_iommu=on to the kernel command line"
    };
    steps.push(format!(
        "{intel} (Intel; the AMD IOMMU is on by default unless amd_iommu=off or iommu=off is \
         given). To change the kernel command line: {GRUB_STEPS}"
    ));
    if backend == Backend::Usrdma {
        return finding(
            "iommu",
            Status::Warn,
            format!(
                "off: {why}; drivers run through usrdma instead (root only), but devices are \
                 not isolated: a device can reach all memory, so a wrong DMA address corrupts \
                 the machine (VFIO needs an IOMMU)"
            ),
            Some(format!(
                "to confine devices (and use VFIO instead of usrdma), turn the IOMMU on: {}",
                steps.join("; ")
            )),
        );
    }
    steps.push(
        "or, on a machine without an IOMMU, use the usrdma kernel module instead of VFIO \
         (see the usrdma finding: `modprobe usrdma`, then `usrdrv bind ADDR --driver usrdma`)"
            .to_owned(),
    );
    finding(
        "iommu",
        Status::Fail,
        format!("off: {why}; VFIO needs an IOMMU to isolate the device's DMA"),
        Some(steps.join("; ")),
    )
}

// ---------------------------------------------------------------------------
// The usrdma module.

/// What sysfs says about the usrdma module.
#[derive(Debug, Clone)]
pub struct UsrdmaFacts {
    /// Its PCI driver is registered (the module is loaded).
    pub loaded: bool,
    /// Where the driver appears when loaded, for messages.
    pub driver_dir: PathBuf,
    /// The devices bound to it, or why they cannot be listed.
    pub bound: Result<Vec<PciAddress>, String>,
}

impl UsrdmaFacts {
    fn read(ctx: &Context, sys: &System<'_>) -> Self {
        let loaded = ctx.sysfs.driver_exists(USRDMA_DRIVER);
        Self {
            loaded,
            driver_dir: sys.sys(&format!("bus/pci/drivers/{USRDMA_DRIVER}")),
            bound: if loaded {
                listing::bound_devices(&ctx.sysfs).map_err(|e| e.to_string())
            } else {
                Ok(Vec::new())
            },
        }
    }

    /// The devices bound to usrdma (none when they cannot be listed).
    fn bound(&self) -> &[PciAddress] {
        self.bound.as_deref().unwrap_or_default()
    }
}

fn join_addresses(addresses: &[PciAddress]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn usrdma_check(facts: &UsrdmaFacts, backend: Backend) -> Finding {
    const CHECK: &str = "usrdma";
    if !facts.loaded {
        if backend == Backend::Vfio {
            return finding(
                CHECK,
                Status::Ok,
                "not loaded (only needed without an IOMMU; here VFIO runs the drivers)".to_owned(),
                None,
            );
        }
        return finding(
            CHECK,
            Status::Fail,
            format!(
                "not loaded ({} is missing): without an IOMMU, the usrdma kernel module is the \
                 only way user-space drivers run here (root only, devices not isolated)",
                facts.driver_dir.display()
            ),
            Some(
                "as root: modprobe usrdma; if it is not installed, build and install it with \
                 DKMS from kmod/usrdma in the usrdrv sources (apt-get install dkms linux-headers-$(uname -r); cp -r \
                 kmod/usrdma /usr/src/usrdma-0.1.0; dkms install usrdma/0.1.0; modprobe \
                 usrdma), or without DKMS: make -C kmod/usrdma && insmod \
                 kmod/usrdma/usrdma.ko; then usrdrv bind ADDR --driver usrdma. Or turn the \
                 IOMMU on and use VFIO (see the iommu finding)"
                    .to_owned(),
            ),
        );
    }
    let bound = match &facts.bound {
        Ok(bound) => bound,
        Err(e) => {
            return finding(
                CHECK,
                Status::Warn,
                format!("loaded, but the devices bound to it cannot be listed: {e}"),
                Some("check that sysfs is mounted and readable (run as root)".to_owned()),
            );
        }
    };
    let devices = match bound.len() {
        0 => "no device bound yet (`usrdrv bind ADDR --driver usrdma` binds one)".to_owned(),
        n => format!(
            "{} bound: {}",
            plural(n, "device", "devices"),
            join_addresses(bound)
        ),
    };
    let note = match backend {
        Backend::Vfio => {
            "; the IOMMU is on, so prefer VFIO: it confines each device to what was mapped"
        }
        _ => "; drivers run through it as root, with devices not isolated (see the iommu finding)",
    };
    finding(CHECK, Status::Ok, format!("loaded, {devices}{note}"), None)
}

// ---------------------------------------------------------------------------
// Lockdown.

/// The mode in brackets of `/sys/kernel/security/lockdown`
/// (`none [integrity] confidentiality`).
pub fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

/// Under lockdown the kernel forbids user space direct access to PCI
/// devices: the usrdma module refuses every open; VFIO still works.
fn lockdown(sys: &System<'_>, backend: Backend) -> Finding {
    const CHECK: &str = "lockdown";
    let path = sys.sys("kernel/security/lockdown");
    let Some(text) = system::read(&path) else {
        return finding(
            CHECK,
            Status::Ok,
            format!(
                "{} cannot be read (securityfs not mounted, or no lockdown LSM): taken as not                  locked down",
                path.display()
            ),
            None,
        );
    };
    match lockdown_mode(&text) {
        None | Some("none") => finding(CHECK, Status::Ok, "not locked down".to_owned(), None),
        Some(mode) => {
            let summary = format!(
                "the kernel is locked down ({mode}, see {}): it forbids user space direct access                  to PCI devices, so the usrdma module cannot be used on this boot (it refuses                  every open with EPERM); VFIO with an IOMMU still works",
                path.display()
            );
            let fix = "lockdown is one-way for a boot: reboot without it (Debian locks down                        under Secure Boot: turn Secure Boot off in the firmware, or boot without                        lockdown= on the kernel command line), or turn the IOMMU on and use VFIO"
                .to_owned();
            let status = if backend == Backend::Vfio {
                Status::Ok
            } else {
                Status::Fail
            };
            finding(CHECK, status, summary, Some(fix))
        }
    }
}

// ---------------------------------------------------------------------------
// Interrupt remapping.

/// The distinct interrupt-remapped chips in `/proc/interrupts`
/// (`IR-PCI-MSI`, `IR-IO-APIC`, `IR-PCI-MSIX` without its device suffix).
pub fn remapped_chips(interrupts: &str) -> Vec<String> {
    let mut chips: Vec<String> = Vec::new();
    for token in interrupts.split_whitespace() {
        if !token.starts_with("IR-") {
            continue;
        }
        // Newer kernels name per-device domains: IR-PCI-MSIX-0000:00:03.0.
        let chip = match token.rsplit_once('-') {
            Some((head, tail)) if tail.contains(':') => head,
            _ => token,
        };
        if !chips.iter().any(|c| c == chip) {
            chips.push(chip.to_owned());
        }
    }
    chips
}

fn interrupt_remapping(sys: &System<'_>, iommu: &IommuFacts, cmdline: &Cmdline) -> Finding {
    const CHECK: &str = "interrupt-remapping";
    let interrupts_path = sys.proc("interrupts");
    let interrupts = system::read(&interrupts_path);
    let chips = interrupts
        .as_deref()
        .map(remapped_chips)
        .unwrap_or_default();
    let unsafe_path = sys.sys("module/vfio_iommu_type1/parameters/allow_unsafe_interrupts");
    let allow_unsafe =
        system::read_value(&unsafe_path).is_some_and(|v| v.starts_with(['Y', 'y', '1']));
    let supported: Vec<&str> = iommu
        .intel_ir_support
        .iter()
        .filter(|(_, ir)| *ir)
        .map(|(u, _)| u.as_str())
        .collect();
    let support_note = if supported.is_empty() {
        String::new()
    } else {
        format!("; supported by {} (ecap bit 3)", supported.join(", "))
    };

    if !chips.is_empty() {
        let mut summary = format!(
            "active: interrupts go through {} ({}){support_note}",
            chips.join(", "),
            interrupts_path.display()
        );
        if allow_unsafe {
            summary.push_str(
                "; vfio_iommu_type1 allow_unsafe_interrupts=Y is set but not needed here",
            );
        }
        return finding(CHECK, Status::Ok, summary, None);
    }

    let unsafe_fix = "only if you accept that the device can raise interrupts it should not \
         (MSI spoofing): echo 'options vfio_iommu_type1 allow_unsafe_interrupts=1' > \
         /etc/modprobe.d/vfio.conf and reload vfio_iommu_type1 (or reboot)";
    let no_support: Vec<&str> = iommu
        .intel_ir_support
        .iter()
        .filter(|(_, ir)| !*ir)
        .map(|(u, _)| u.as_str())
        .collect();
    let (why, fix) = if let Some(word) = cmdline.intremap_disabled_by() {
        (
            format!("turned off on the kernel command line ({word})"),
            format!("remove {word} from the kernel command line: {GRUB_STEPS}"),
        )
    } else if !iommu.has_groups() && iommu.units.is_empty() {
        // Checked before /proc/interrupts: nothing there can change this.
        (
            "there is no IOMMU (see the iommu finding), and interrupt remapping is part of it"
                .to_owned(),
            "turn the IOMMU on (see the iommu finding): VT-d and AMD-Vi bring interrupt \
             remapping with them"
                .to_owned(),
        )
    } else if interrupts.is_none() {
        let status = if supported.is_empty() {
            Status::Warn
        } else {
            Status::Ok
        };
        return finding(
            CHECK,
            status,
            format!(
                "could not read {} to see whether it is active{support_note}",
                interrupts_path.display()
            ),
            (status == Status::Warn).then(|| {
                format!(
                    "check `grep IR- {}` shows remapped interrupts",
                    interrupts_path.display()
                )
            }),
        );
    } else if !no_support.is_empty() && supported.is_empty() {
        (
            format!(
                "the IOMMU ({}) does not support it (ecap bit 3 clear)",
                no_support.join(", ")
            ),
            format!("use a machine whose IOMMU remaps interrupts, or, {unsafe_fix}"),
        )
    } else if supported.is_empty()
        && !iommu
            .units
            .iter()
            .any(|u| u.starts_with("dmar") || u.starts_with("ivhd"))
        && iommu.has_groups()
    {
        // Not x86 (an SMMU, virtio-iommu): MSI isolation works differently.
        return finding(
            CHECK,
            Status::Warn,
            format!(
                "no remapped interrupts in {}: this check knows x86 interrupt remapping; \
                 on this IOMMU ({}) VFIO decides MSI isolation itself",
                interrupts_path.display(),
                if iommu.units.is_empty() {
                    "no unit in class/iommu".to_owned()
                } else {
                    iommu.units.join(", ")
                }
            ),
            Some(format!(
                "if opening a device fails with EPERM, the IOMMU does not isolate MSIs: {unsafe_fix}"
            )),
        );
    } else {
        (
            format!(
                "not active: no remapped (IR-) interrupts in {}{support_note}; the firmware may \
                 have opted out (`dmesg | grep -i remapping` says why)",
                interrupts_path.display()
            ),
            format!(
                "turn on x2APIC and interrupt remapping in the firmware setup or update the \
                 firmware; otherwise, {unsafe_fix}"
            ),
        )
    };
    // Without an IOMMU, allow_unsafe_interrupts changes nothing: VFIO has no
    // IOMMU to attach to.
    let no_iommu = !iommu.has_groups() && iommu.units.is_empty();
    if allow_unsafe && !no_iommu {
        finding(
            CHECK,
            Status::Warn,
            format!(
                "off: {why}; VFIO accepts devices anyway because vfio_iommu_type1 \
                 allow_unsafe_interrupts=Y, so a device can raise interrupts it should not"
            ),
            Some(fix),
        )
    } else {
        finding(
            CHECK,
            Status::Fail,
            format!(
                "off: {why}; without it VFIO refuses devices (VFIO_SET_IOMMU fails with EPERM)"
            ),
            Some(fix),
        )
    }
}

// ---------------------------------------------------------------------------
// VFIO modules.

fn vfio_modules(sys: &System<'_>, backend: Backend) -> Finding {
    let loaded = |module: &str| {
        sys.sys(&format!("module/{module}")).is_dir()
            || (module == "vfio_pci"
                && sys
                    .sys(&format!("bus/pci/drivers/{VFIO_PCI_DRIVER}"))
                    .is_dir())
    };
    let (have, missing): (Vec<&str>, Vec<&str>) = ["vfio", "vfio_pci", "vfio_iommu_type1"]
        .into_iter()
        .partition(|m| loaded(m));
    if missing.is_empty() {
        return finding(
            "vfio-modules",
            Status::Ok,
            format!("loaded: {}", have.join(", ")),
            None,
        );
    }
    let mut summary = format!("not loaded: {}", missing.join(", "));
    if !have.is_empty() {
        summary.push_str(&format!(" (loaded: {})", have.join(", ")));
    }
    if backend == Backend::Usrdma {
        // Loading them would change nothing: vfio-pci takes no device
        // without an IOMMU group.
        summary.push_str(
            "; only needed with an IOMMU: VFIO cannot run here without one, drivers run \
             through usrdma",
        );
        return finding("vfio-modules", Status::Ok, summary, None);
    }
    let load = if missing.iter().any(|m| *m != "vfio_iommu_type1") {
        "modprobe vfio-pci (it loads vfio and vfio_iommu_type1 too)"
    } else {
        "modprobe vfio_iommu_type1"
    };
    let persist_name = if load.starts_with("modprobe vfio-pci") {
        "vfio-pci"
    } else {
        "vfio_iommu_type1"
    };
    finding(
        "vfio-modules",
        Status::Fail,
        summary,
        Some(format!(
            "as root: {load}; to load it at every boot: echo {persist_name} >> \
             /etc/modules-load.d/vfio.conf"
        )),
    )
}

// ---------------------------------------------------------------------------
// /dev/vfio.

/// A VFIO group's device node.
#[derive(Debug, Clone)]
pub struct GroupNode {
    /// The file name: the group number (or `noiommu-N`).
    pub name: String,
    /// The node.
    pub path: PathBuf,
    /// This process may open it for reading and writing.
    pub usable: bool,
    /// Who owns it.
    pub ownership: Option<Ownership>,
}

/// What `/dev/vfio` holds.
#[derive(Debug, Clone)]
pub struct VfioNodes {
    /// `/dev/vfio/vfio`, the container node.
    pub container: PathBuf,
    /// It exists.
    pub container_exists: bool,
    /// This process may open it for reading and writing.
    pub container_usable: bool,
    /// The group nodes.
    pub groups: Vec<GroupNode>,
}

impl VfioNodes {
    fn read(sys: &System<'_>) -> Self {
        let dir = sys.dev("vfio");
        let container = dir.join("vfio");
        let groups = system::list_dir(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| {
                let number = n.strip_prefix("noiommu-").unwrap_or(n);
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            })
            .map(|name| {
                let path = dir.join(&name);
                GroupNode {
                    usable: system::can_read_write(&path),
                    ownership: system::ownership(&path),
                    name,
                    path,
                }
            })
            .collect();
        Self {
            container_exists: container.exists(),
            container_usable: system::can_read_write(&container),
            container,
            groups,
        }
    }
}

fn describe_owner(o: Option<Ownership>) -> String {
    match o {
        Some(o) => {
            let group = system::group_name(o.gid).unwrap_or_else(|| o.gid.to_string());
            format!("uid {}, group {group}, mode {:04o}", o.uid, o.mode)
        }
        None => "ownership unknown".to_owned(),
    }
}

fn group_node_fix(paths: &[&Path]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!(
        "as root: chown $USER {} (until the device is rebound), or for good a udev rule in \
         /etc/udev/rules.d/99-vfio.rules: SUBSYSTEM==\"vfio\", GROUP=\"vfio\", MODE=\"0660\" \
         (groupadd vfio; usermod -aG vfio $USER; log in again)",
        list.join(" ")
    )
}

fn dev_vfio(nodes: &VfioNodes, backend: Backend) -> Finding {
    const CHECK: &str = "dev-vfio";
    let container = nodes.container.display();
    if !nodes.container_exists && backend == Backend::Usrdma {
        return finding(
            CHECK,
            Status::Ok,
            format!(
                "{container} is missing (the vfio module is not loaded); only VFIO uses it, \
                 and VFIO cannot run here without an IOMMU: drivers run through usrdma"
            ),
            None,
        );
    }
    if !nodes.container_exists {
        return finding(
            CHECK,
            Status::Fail,
            format!("{container} is missing: the vfio module is not loaded"),
            Some("as root: modprobe vfio-pci".to_owned()),
        );
    }
    if !nodes.container_usable {
        return finding(
            CHECK,
            Status::Fail,
            format!(
                "{container} is not readable and writable by you ({})",
                describe_owner(system::ownership(&nodes.container))
            ),
            Some(format!(
                "the kernel creates it with mode 0666: as root, chmod 0666 {container}, and \
                 look for a udev rule that changes it"
            )),
        );
    }
    if nodes.groups.is_empty() {
        let next = if backend == Backend::Vfio {
            "yet: bind a device with `usrdrv bind ADDR`"
        } else {
            "(vfio-pci takes devices only with the IOMMU on)"
        };
        return finding(
            CHECK,
            Status::Ok,
            format!("{container} usable; no VFIO group nodes {next}"),
            None,
        );
    }
    let (usable, blocked): (Vec<&GroupNode>, Vec<&GroupNode>) =
        nodes.groups.iter().partition(|g| g.usable);
    let names = |gs: &[&GroupNode]| {
        gs.iter()
            .map(|g| g.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if blocked.is_empty() {
        return finding(
            CHECK,
            Status::Ok,
            format!(
                "{container} and group {} {} usable",
                if usable.len() == 1 { "node" } else { "nodes" },
                names(&usable)
            ),
            None,
        );
    }
    let blocked_text: Vec<String> = blocked
        .iter()
        .map(|g| format!("{} ({})", g.path.display(), describe_owner(g.ownership)))
        .collect();
    let paths: Vec<&Path> = blocked.iter().map(|g| g.path.as_path()).collect();
    let (status, lead) = if usable.is_empty() {
        (Status::Fail, "no VFIO group node is usable by you")
    } else {
        (Status::Warn, "some VFIO group nodes are not usable by you")
    };
    let mut summary = format!("{lead}: {}", blocked_text.join(", "));
    if !usable.is_empty() {
        summary.push_str(&format!("; usable: {}", names(&usable)));
    }
    finding(CHECK, status, summary, Some(group_node_fix(&paths)))
}

// ---------------------------------------------------------------------------
// Who we are.

fn why_usable(node: &GroupNode, me: &Identity) -> String {
    match node.ownership {
        Some(o) if o.uid == me.euid => format!("{} is yours", node.name),
        Some(o) if me.in_group(o.gid) && o.mode & 0o060 == 0o060 => format!(
            "{} through group {}",
            node.name,
            system::group_name(o.gid).unwrap_or_else(|| o.gid.to_string())
        ),
        Some(o) if o.mode & 0o006 == 0o006 => format!("{} is open to everyone", node.name),
        _ => format!("{} (by an ACL)", node.name),
    }
}

/// This process's effective capabilities, from `/proc/self/status`.
fn effective_caps(sys: &System<'_>) -> Option<u64> {
    system::read(&sys.proc("self/status"))
        .as_deref()
        .and_then(system::cap_eff)
}

fn user(sys: &System<'_>, nodes: &VfioNodes, me: &Identity, backend: Backend) -> Finding {
    const CHECK: &str = "user";
    if backend == Backend::Usrdma {
        return usrdma_user(sys, me);
    }
    if me.euid == 0 {
        return finding(
            CHECK,
            Status::Ok,
            "running as root: every VFIO node is usable, and binding devices works".to_owned(),
            None,
        );
    }
    let groups: Vec<String> = me
        .groups
        .iter()
        .chain(std::iter::once(&me.egid))
        .map(|g| system::group_name(*g).unwrap_or_else(|| g.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let who = format!("uid {}, not root (groups: {})", me.euid, groups.join(", "));
    if nodes.groups.is_empty() {
        return finding(
            CHECK,
            Status::Warn,
            format!(
                "{who}; binding a device to vfio-pci needs root, and then its group node in \
                 {} must be yours",
                nodes
                    .container
                    .parent()
                    .unwrap_or(Path::new("/dev/vfio"))
                    .display()
            ),
            Some(
                "bind as root (sudo usrdrv bind ADDR), then give yourself the group node: sudo \
                 chown $USER /dev/vfio/GROUP, or a udev rule SUBSYSTEM==\"vfio\", GROUP=\"vfio\", \
                 MODE=\"0660\" with yourself in group vfio"
                    .to_owned(),
            ),
        );
    }
    let usable: Vec<String> = nodes
        .groups
        .iter()
        .filter(|g| g.usable)
        .map(|g| why_usable(g, me))
        .collect();
    if usable.is_empty() {
        let paths: Vec<&Path> = nodes.groups.iter().map(|g| g.path.as_path()).collect();
        return finding(
            CHECK,
            Status::Fail,
            format!("{who}; you own no VFIO group node and are in none of their groups"),
            Some(format!("run as root, or {}", group_node_fix(&paths))),
        );
    }
    finding(
        CHECK,
        Status::Ok,
        format!("{who}; group nodes usable: {}", usable.join(", ")),
        None,
    )
}

/// Who may drive devices through usrdma: its open requires CAP_SYS_RAWIO,
/// and the kernel makes `/dev/usrdma/ADDR` root's with mode 0600.
fn usrdma_user(sys: &System<'_>, me: &Identity) -> Finding {
    const CHECK: &str = "user";
    let rawio = match effective_caps(sys) {
        Some(caps) => caps & (1 << CAP_SYS_RAWIO) != 0,
        None => me.euid == 0,
    };
    match (me.euid == 0, rawio) {
        (true, true) => finding(
            CHECK,
            Status::Ok,
            "running as root: usrdma opens devices for root (it requires CAP_SYS_RAWIO), and \
             binding devices works"
                .to_owned(),
            None,
        ),
        (false, true) => finding(
            CHECK,
            Status::Ok,
            format!(
                "uid {}, not root, with CAP_SYS_RAWIO: usrdma opens a device for this process \
                 if its /dev/usrdma/ADDR node is too (the kernel makes them root's, mode \
                 0600); binding devices needs root",
                me.euid
            ),
            None,
        ),
        (root, false) => finding(
            CHECK,
            Status::Fail,
            format!(
                "{}: without an IOMMU drivers run only through usrdma, which opens a device \
                 only for a process with CAP_SYS_RAWIO",
                if root {
                    "root, but without CAP_SYS_RAWIO (a container or the capability bounding \
                     set dropped it)"
                        .to_owned()
                } else {
                    format!("uid {}, not root", me.euid)
                }
            ),
            Some(
                "run the driver, and usrdrv bind, as root (sudo), keeping CAP_SYS_RAWIO (in a \
                 container: --cap-add SYS_RAWIO)"
                    .to_owned(),
            ),
        ),
    }
}

// ---------------------------------------------------------------------------
// RLIMIT_MEMLOCK.

fn memlock(sys: &System<'_>, me: &Identity) -> Finding {
    const CHECK: &str = "memlock";
    let (ipc_lock, how) = match effective_caps(sys) {
        Some(caps) => (caps & (1 << CAP_IPC_LOCK) != 0, "CAP_IPC_LOCK"),
        None => (me.euid == 0, "root"),
    };
    let limits = usrdrv::limits::memlock().map(|l| (l.soft, l.hard));
    let limit_text = match &limits {
        Ok((None, _)) => "unlimited".to_owned(),
        Ok((Some(soft), _)) => bytes(*soft),
        Err(e) => format!("unknown ({e})"),
    };
    if ipc_lock {
        return finding(
            CHECK,
            Status::Ok,
            format!(
                "no limit applies: this process has {how}, which exempts DMA mappings from \
                 RLIMIT_MEMLOCK (soft limit {limit_text})"
            ),
            None,
        );
    }
    let (soft, hard) = match limits {
        Ok(l) => l,
        Err(_) => {
            return finding(
                CHECK,
                Status::Warn,
                format!("RLIMIT_MEMLOCK: {limit_text}"),
                Some("check `ulimit -l`".to_owned()),
            );
        }
    };
    let Some(soft) = soft else {
        return finding(
            CHECK,
            Status::Ok,
            "RLIMIT_MEMLOCK: unlimited".to_owned(),
            None,
        );
    };
    if soft >= MEMLOCK_WANTED {
        return finding(
            CHECK,
            Status::Ok,
            format!("RLIMIT_MEMLOCK is {limit_text}: DMA mappings may pin up to that much"),
            None,
        );
    }
    let raise = match hard {
        None => "ulimit -l unlimited".to_owned(),
        Some(h) if h > soft => format!("ulimit -l {} (your hard limit; more needs root)", h / 1024),
        Some(_) => "as root, ulimit -l unlimited".to_owned(),
    };
    let fix = format!(
        "raise it: {raise} in the shell that starts the driver; LimitMEMLOCK=infinity in its \
         systemd unit; or `USER - memlock unlimited` in /etc/security/limits.conf (log in again)"
    );
    let status = if soft < PAGE {
        Status::Fail
    } else {
        Status::Warn
    };
    finding(
        CHECK,
        status,
        format!(
            "RLIMIT_MEMLOCK is {limit_text} and this process lacks CAP_IPC_LOCK: every DMA \
             mapping pins memory and counts against it, so drivers fail with ENOMEM beyond \
             {limit_text} (at least {} recommended)",
            bytes(MEMLOCK_WANTED)
        ),
        Some(fix),
    )
}

// ---------------------------------------------------------------------------
// Hugepages.

/// One hugepage pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePool {
    /// Page size in KiB.
    pub size_kb: u64,
    /// Pages reserved.
    pub total: u64,
    /// Pages not in use.
    pub free: u64,
}

/// The pools in `kernel/mm/hugepages`, or from `/proc/meminfo` (default
/// size only) when sysfs has none.
fn huge_pools(sys: &System<'_>) -> Option<Vec<HugePool>> {
    let dir = sys.sys("kernel/mm/hugepages");
    if let Some(names) = system::list_dir(&dir) {
        let mut pools: Vec<HugePool> = names
            .iter()
            .filter_map(|n| {
                let size_kb = n
                    .strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()?;
                let read = |f: &str| {
                    system::read_value(&dir.join(n).join(f)).and_then(|v| v.parse::<u64>().ok())
                };
                Some(HugePool {
                    size_kb,
                    total: read("nr_hugepages").unwrap_or(0),
                    free: read("free_hugepages").unwrap_or(0),
                })
            })
            .collect();
        pools.sort_by_key(|p| p.size_kb);
        if !pools.is_empty() {
            return Some(pools);
        }
    }
    let meminfo = system::read(&sys.proc("meminfo"))?;
    parse_meminfo_pool(&meminfo).map(|p| vec![p])
}

/// The default hugepage pool from `/proc/meminfo`.
pub fn parse_meminfo_pool(meminfo: &str) -> Option<HugePool> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(HugePool {
        size_kb: field("Hugepagesize")?,
        total: field("HugePages_Total")?,
        free: field("HugePages_Free").unwrap_or(0),
    })
}

fn hugepages(sys: &System<'_>) -> Finding {
    const CHECK: &str = "hugepages";
    let fix = format!(
        "as root: echo 512 > {} (1 GiB of 2 MiB pages, now), or vm.nr_hugepages = 512 in \
         /etc/sysctl.d/hugepages.conf (at boot; the default size, 2 MiB on x86); usrdrv works \
         without them, on 4 KiB pages",
        sys.sys("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
            .display()
    );
    let Some(pools) = huge_pools(sys) else {
        return finding(
            CHECK,
            Status::Warn,
            "the kernel offers no hugepages (no kernel/mm/hugepages, no HugePages_Total in \
             meminfo): DMA memory uses 4 KiB pages"
                .to_owned(),
            Some("use a kernel with CONFIG_HUGETLBFS; usrdrv works without hugepages".to_owned()),
        );
    };
    let others: Vec<String> = pools
        .iter()
        .filter(|p| p.size_kb != HUGEPAGE_KB && p.total > 0)
        .map(|p| format!("{} of {}", p.total, bytes(p.size_kb * 1024)))
        .collect();
    let others_note = if others.is_empty() {
        String::new()
    } else {
        format!(
            "; reserved in other sizes: {} (usrdrv allocates 2 MiB ones)",
            others.join(", ")
        )
    };
    match pools.iter().find(|p| p.size_kb == HUGEPAGE_KB) {
        Some(p) if p.total > 0 && p.free > 0 => finding(
            CHECK,
            Status::Ok,
            format!(
                "{} of {} 2 MiB hugepages free for DMA memory",
                p.free, p.total
            ),
            None,
        ),
        Some(p) if p.total > 0 => finding(
            CHECK,
            Status::Warn,
            format!(
                "all {} 2 MiB hugepages are in use: new DMA memory falls back to 4 KiB pages",
                p.total
            ),
            Some(fix.replace("echo 512", &format!("echo {}", p.total + 512))),
        ),
        _ => finding(
            CHECK,
            Status::Warn,
            format!(
                "no 2 MiB hugepages reserved{others_note}: DMA memory falls back to 4 KiB pages \
                 (more IOMMU entries and TLB misses)"
            ),
            Some(fix),
        ),
    }
}

// ---------------------------------------------------------------------------
// Devices ready for VFIO or bound to usrdma.

fn devices(ctx: &Context, backend: Backend, usrdma: &UsrdmaFacts) -> Finding {
    const CHECK: &str = "devices";
    let addresses = match ctx.sysfs.addresses() {
        Ok(a) => a,
        Err(e) => {
            return finding(
                CHECK,
                Status::Warn,
                format!("cannot list PCI devices: {e}"),
                Some("check that sysfs is mounted".to_owned()),
            );
        }
    };
    let mut ready = Vec::new();
    let mut blocked = Vec::new();
    for address in addresses {
        let function = match ctx.sysfs.function(address) {
            Ok(f) => f,
            Err(SysfsError::NoSuchDevice { .. }) => continue,
            Err(e) => {
                blocked.push(format!("{address}: {e}"));
                continue;
            }
        };
        if function.driver.as_deref() != Some(VFIO_PCI_DRIVER) {
            continue;
        }
        let r = readiness(&ctx.sysfs, &function);
        if r.ready {
            ready.push(match function.iommu_group {
                Some(g) => format!("{address} (group {g})"),
                None => address.to_string(),
            });
        } else {
            blocked.push(format!("{address}: {}", r.missing.join("; ")));
        }
    }
    let on_usrdma = usrdma.bound();
    if !ready.is_empty() || !on_usrdma.is_empty() {
        let mut parts = Vec::new();
        if !ready.is_empty() {
            parts.push(format!("ready for VFIO: {}", ready.join(", ")));
        }
        if !on_usrdma.is_empty() {
            parts.push(format!("bound to usrdma: {}", join_addresses(on_usrdma)));
        }
        if !blocked.is_empty() {
            parts.push(format!("not ready for VFIO: {}", blocked.join(", ")));
        }
        return finding(CHECK, Status::Ok, parts.join("; "), None);
    }
    if blocked.is_empty() {
        let (summary, fix) = match backend {
            Backend::Vfio => (
                "no device is bound to vfio-pci yet",
                "as root: usrdrv bind ADDR (`usrdrv list` shows the devices)",
            ),
            Backend::Usrdma => (
                "no device is bound to usrdma yet",
                "as root: usrdrv bind ADDR --driver usrdma (`usrdrv list` shows the devices)",
            ),
            Backend::Neither => (
                "no device is bound to vfio-pci or usrdma yet",
                "turn the IOMMU on first (see the iommu finding): vfio-pci takes no device \
                 without an IOMMU group; then, as root, usrdrv bind ADDR. Or load usrdma (see \
                 the usrdma finding) and, as root, usrdrv bind ADDR --driver usrdma",
            ),
        };
        return finding(
            CHECK,
            Status::Warn,
            summary.to_owned(),
            Some(fix.to_owned()),
        );
    }
    finding(
        CHECK,
        Status::Warn,
        format!("bound to vfio-pci but not ready: {}", blocked.join(", ")),
        Some(
            "bind the rest of the IOMMU group too (usrdrv bind --group ADDR); a device without \
             an IOMMU group needs the IOMMU on (see the iommu finding)"
                .to_owned(),
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            super::lockdown_mode("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            super::lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(super::lockdown_mode("garbage"), None);
    }

    use super::*;

    #[test]
    fn command_line_options() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on,igfx_off iommu=pt intremap=on \
             intel_iommu=off -- intremap=off",
        );
        assert_eq!(c.options("intel_iommu"), ["on", "igfx_off", "off"]);
        assert_eq!(
            c.last_of("intel_iommu", &["on", "off"]).as_deref(),
            Some("off")
        );
        assert_eq!(c.iommu_disabled_by(), ["intel_iommu=off"]);
        assert!(c.passthrough());
        // After `--` the words are init's, not the kernel's.
        assert_eq!(c.intremap_disabled_by(), None);
        assert!(c.options("iommu.passthrough").is_empty());

        let c = Cmdline::parse("amd_iommu=off iommu=off intremap=no_x2apic_optout,off nointremap");
        assert_eq!(c.iommu_disabled_by(), ["amd_iommu=off", "iommu=off"]);
        assert_eq!(c.intremap_disabled_by().as_deref(), Some("intremap=off"));
        assert!(!c.passthrough());
        // Options that do not turn remapping off.
        let c = Cmdline::parse("intremap=no_x2apic_optout intremap=nosid");
        assert_eq!(c.intremap_disabled_by(), None);
        assert!(Cmdline::parse("iommu.passthrough=1").passthrough());
        assert!(
            Cmdline::parse("nointremap")
                .intremap_disabled_by()
                .is_some()
        );
    }

    #[test]
    fn remapped_interrupt_chips() {
        let text = "\
            CPU0       CPU1
   0:         44          0   IO-APIC   2-edge      timer
   9:          0          0  IR-IO-APIC    9-fasteoi   acpi
  24:          0          0  DMAR-MSI    0-edge      dmar0
  25:          3          0  IR-PCI-MSIX-0000:00:04.0    0-edge      nvme0q0
  26:          3          0  IR-PCI-MSIX-0000:00:05.0    0-edge      nvme1q0
  27:          0          0  IR-PCI-MSI 65536-edge      aerdrv
";
        assert_eq!(
            remapped_chips(text),
            ["IR-IO-APIC", "IR-PCI-MSIX", "IR-PCI-MSI"]
        );
        assert!(
            remapped_chips("  0: 1 IO-APIC 2-edge timer\n 24: 0 PCI-MSI 1-edge x\n").is_empty()
        );
    }

    #[test]
    fn meminfo_pool() {
        let text = "MemTotal: 1000 kB\nHugePages_Total:      16\nHugePages_Free:       10\nHugepagesize:       2048 kB\n";
        assert_eq!(
            parse_meminfo_pool(text),
            Some(HugePool {
                size_kb: 2048,
                total: 16,
                free: 10
            })
        );
        assert_eq!(parse_meminfo_pool("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
        assert_eq!(bytes(65536), "64 KiB");
        assert_eq!(bytes(1000), "1000 bytes");
        assert_eq!(bytes(0), "0 bytes");
    }
}
