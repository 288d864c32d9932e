//! The NVMe benchmark's Markdown report, `docs/perf/nvme-bench.md`, and
//! the summary printed on the terminal.

use std::fmt::Write as _;

use crate::nvme_bench::{self, Figures, NvmeResults};

/// The report, relative to the workspace root.
pub const REPORT_PATH: &str = "docs/perf/nvme-bench.md";

/// What the run was and what it ran on.
#[derive(Debug, Clone)]
pub struct Context {
    /// The command line that produced the report.
    pub command: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// QEMU's version line.
    pub qemu: String,
    /// Accelerator and guest shape.
    pub accel: String,
    /// Host CPUs.
    pub host_cores: usize,
    /// The host's load averages around the run.
    pub host_load: String,
    /// Seconds per case.
    pub secs: u64,
}

/// The targets and the load generator check, as on the terminal.
pub fn summary(r: &NvmeResults) -> String {
    let targets = nvme_bench::target_rows(r);
    let agreement = nvme_bench::agreement_rows(r);
    let mut s = String::new();
    let _ = writeln!(s, "\nNVMe, usrdrv against the kernel (same boot):");
    s.push_str(&nvme_bench::rows_table(&targets, "usrdrv", "kernel"));
    let _ = writeln!(
        s,
        "\nThe load generator: usrdrv-nvme perf on /dev/nvme*n1 against fio:"
    );
    s.push_str(&nvme_bench::rows_table(&agreement, "usrdrv-nvme", "fio"));
    if let Some(text) = floors(r) {
        let _ = writeln!(s, "\nThe emulator's floor (usrdrv polled, 512 B): {text}");
    }
    let missed: Vec<&str> = targets
        .iter()
        .chain(&agreement)
        .filter(|r| r.pass == Some(false))
        .map(|r| r.name)
        .collect();
    if missed.is_empty() {
        let _ = writeln!(s, "\nxtask: every NVMe target that was measured was met");
    } else {
        let _ = writeln!(s, "\nxtask: NVMe targets missed: {}", missed.join("; "));
    }
    s
}

/// The Markdown report.
pub fn report(c: &Context, r: &NvmeResults) -> String {
    let env = r.environment.clone().unwrap_or_default();
    let text = |k: &str| env[k].as_str().unwrap_or("unknown").to_string();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# NVMe benchmark: usrdrv's driver against the kernel's\n"
    );
    let _ = writeln!(
        s,
        "One boot, two emulated NVMe controllers: QEMU's nvme on a file-backed \
         raw image ({file}, 64 MiB, the one the tests use) and on a `null-co` \
         drive ({null}, 1 GiB, reads return zeroes without touching a disk: the \
         driver path without the emulated disk). The kernel command line has \
         `{poll}`, so the kernel's nvme driver has a polled queue \
         (`/sys/block/*/queue/io_poll`: file {fpoll}, null-co {npoll}), and \
         `{clock}`: under TCG the kernel would otherwise fall back to the HPET, \
         whose every read is an emulated device access, and the block layer \
         stamps each request, so the kernel's side would pay per I/O for a cost \
         only emulation has (within the noise between runs, as measured so \
         far). The cases run \
         in groups (file QD1, file QD32, null-co QD1, null-co QD32, 128 KiB \
         sequential): in each, the kernel's driver is measured through \
         `/dev/nvme*n1` with fio (Debian 12's package, `{fio}`), `--direct=1`, \
         io_uring (with and without `--hipri`) and libaio, and with `usrdrv-nvme \
         perf /dev/...` (io_uring, `O_DIRECT`) to check the tool against fio; then \
         both controllers are rebound to vfio-pci and `usrdrv-nvme perf ADDR` \
         measures usrdrv's driver, polled and on MSI-X interrupts; then they go \
         back to nvme for the next group, so the two sides of a ratio run within \
         a minute or two of each other. fio runs with registered buffers and files \
         (io_uring) and, at depth, in whole batches without per-I/O time stamps \
         (`--gtod_reduce=1`: no latency there), its best figures under emulation. \
         Random reads unless the row says otherwise; {secs} s per case. The load \
         generator check's cases at depth (fio and usrdrv-nvme on io_uring, QD32, \
         each controller) run {rounds} times, alternating, and give each figure's \
         median: one run of each is within the emulator's noise of a 10% \
         agreement.\n\n\
         Latency is from submission to completion (fio's `lat`, the tool's TSC \
         stamps). Guest CPU per I/O is the busy time of every guest CPU over the \
         case (`/proc/stat`: user, system, irq and softirq) divided by the I/Os \
         completed, the same measure for both sides, and \"of it user space\" the \
         part in user and nice time: the load generator's or the user-space \
         driver's own work; a polled driver keeps one CPU busy whatever it does.\n",
        file = nvme_bench::FILE_ADDR,
        null = nvme_bench::NULL_ADDR,
        poll = nvme_bench::POLL_QUEUES,
        clock = nvme_bench::CLOCK.join(" "),
        fpoll = env["file_io_poll"],
        npoll = env["null_io_poll"],
        fio = text("fio"),
        secs = c.secs,
        rounds = nvme_bench::CHECK_ROUNDS,
    );
    let _ = writeln!(s, "Regenerated with `{}`.\n", c.command);
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {} |", c.date);
    let _ = writeln!(s, "| guest kernel | {} |", text("kernel"));
    let _ = writeln!(s, "| QEMU | {} |", c.qemu);
    let _ = writeln!(s, "| accelerator | {} |", c.accel);
    let _ = writeln!(
        s,
        "| guest clock source | {} (the tool stamps with the TSC) |",
        text("clocksource")
    );
    let _ = writeln!(
        s,
        "| host cores | {} (the guest's {} vCPUs and QEMU's own I/O thread share them) |",
        c.host_cores, env["cpus"]
    );
    let _ = writeln!(s, "| host load average | {} |", c.host_load);
    let _ = writeln!(s, "| build | static, release profile |");
    let _ = writeln!(s, "\n## Targets (ratios within this boot)\n");
    s.push_str(&nvme_bench::rows_table(
        &nvme_bench::target_rows(r),
        "usrdrv",
        "kernel",
    ));
    if let Some(text) = floors(r) {
        let _ = writeln!(
            s,
            "\nThe emulator's own floor as measured here, the smallest \
             doorbell-to-completion loop on each controller (usrdrv polled, 512 B \
             reads): {text}. The rows \"/ the floor\" say how far each side is \
             from it; it moves with the host's load like any figure, so a ratio a \
             little under 1 is within that noise. \"Best the floor allows\" is \
             the ratio a 4 KiB driver would have if it ran as fast as that loop \
             (a 4 KiB read costs the emulator at least what a 512 B one does; a \
             polled queue keeps one CPU busy, so its CPU per I/O is at least one \
             over its IOPS): a target beyond it is out of reach on this rig for \
             any driver no faster than the floor's own loop."
        );
    }
    if let Some(text) = waiting(r) {
        let _ = writeln!(s, "\n{text}");
    }
    if let Some(text) = two_queues(r, c.host_cores) {
        let _ = writeln!(s, "\n{text}");
    }
    let _ = writeln!(
        s,
        "\n## The load generator against fio (the kernel's driver)\n"
    );
    s.push_str(&nvme_bench::rows_table(
        &nvme_bench::agreement_rows(r),
        "usrdrv-nvme",
        "fio",
    ));
    if let Some(text) = depth_gap(r) {
        let _ = writeln!(s, "\n{text}");
    }
    let _ = writeln!(s, "\n## Every case\n");
    s.push_str(&nvme_bench::cases_table(r));
    let _ = writeln!(
        s,
        "\nFigures under emulation vary between boots and with the host's load: only \
         the ratios within one run mean anything. Targets are reported, not asserted. \
         Each case is also printed as a `{}` JSON line with the load generator's own \
         output.",
        nvme_bench::MARKER
    );
    s
}

/// The floors of both controllers, as one phrase.
fn floors(r: &NvmeResults) -> Option<String> {
    let one = |null: bool| {
        nvme_bench::floor(r, null).map(|(p50, iops)| {
            format!(
                "{}: QD1 p50 {p50:.1} µs{}",
                if null { "null-co" } else { "file" },
                iops.map_or(String::new(), |i| format!(", QD32 {:.1}k IOPS", i / 1000.0))
            )
        })
    };
    let parts: Vec<String> = [one(false), one(true)].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// How much of a polled usrdrv queue's CPU per I/O at depth is its own work
/// and how much is spinning while the controller works.
fn waiting(r: &NvmeResults) -> Option<String> {
    let part = |key: &str, what: &str| {
        let f = r.figures.get(key)?;
        (f.waiting_us.is_finite() && f.cpu_us > 0.0).then(|| {
            let doorbells = if f.tail_doorbell_us.is_finite() && f.tail_doorbell_each_us.is_finite()
            {
                format!(
                    ", and {:.1} µs ({:.0}%) writing submission doorbells, {:.0} µs a write",
                    f.tail_doorbell_us,
                    100.0 * f.tail_doorbell_us / f.cpu_us,
                    f.tail_doorbell_each_us
                )
            } else {
                String::new()
            };
            format!(
                "{what}, {:.1} of its {:.1} µs per I/O ({:.0}%) waiting for the controller \
                 with nothing to reap{doorbells}",
                f.waiting_us,
                f.cpu_us,
                100.0 * f.waiting_us / f.cpu_us
            )
        })
    };
    let parts: Vec<String> = [
        part("u_file_qd32_poll", "on the file backend"),
        part("u_null_qd32_poll", "on null-co"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "Where a polled usrdrv queue's guest CPU time goes at QD32: {}. The waiting is the \
             emulated controller's time, not the driver's; the rows \"less the \
             poll loop's waiting\" compare the rest with the kernel's CPU per \
             I/O. That rest still holds the doorbells: under TCG a write to the \
             controller's registers takes QEMU's global lock, which the \
             controller's emulation holds while it works, so one register write \
             costs the vCPU as much as many commands' worth of the driver's own \
             code (head doorbells, rung as often, are not timed apart).",
            parts.join("; ")
        )
    })
}

/// Two queues against one, polled and on interrupts, with how many guest
/// CPUs each kept busy: the evidence for where the emulator is the limit.
fn two_queues(r: &NvmeResults, host_cores: usize) -> Option<String> {
    let get = |k: &str| r.figures.get(k).filter(|f| f.iops > 0.0);
    let (p1, p2) = (get("u_null_qd32_poll")?, get("u_null_qd32_poll_2q")?);
    let (i1, i2) = (get("u_null_qd32_irq")?, get("u_null_qd32_irq_2q")?);
    // Busy guest CPUs: CPU time per I/O times I/Os per second.
    let busy = |f: &Figures| f.cpu_us * f.iops / 1e6;
    Some(format!(
        "Two queues on two threads, null-co, QD32 each: polled, {:.2}× the IOPS of \
         one, with {:.1} guest CPUs busy (one queue: {:.1}); on interrupts, \
         {:.2}× one, with {:.1} busy (one queue: {:.1}). A polling thread keeps its \
         vCPU busy whether or not completions come, and the host's {host_cores} \
         cores run both vCPUs and QEMU's emulation of the controller, which \
         serves all of its queues from QEMU's main loop: when the two \
         pollers take both cores, the emulation that feeds them gets less, so \
         there the emulator, not the driver, sets the limit.",
        p2.iops / p1.iops,
        busy(p2),
        busy(p1),
        i2.iops / i1.iops,
        busy(i2),
        busy(i1),
    ))
}

/// What the two load generators cost at depth, where they disagree: the
/// user-space CPU per I/O of each, from the same run.
fn depth_gap(r: &NvmeResults) -> Option<String> {
    let pair = |tool: &str, fio: &str| {
        let (t, f) = (r.figures.get(tool)?, r.figures.get(fio)?);
        let finite = t.user_us.is_finite() && f.user_us.is_finite() && f.iops > 0.0;
        finite.then(|| (t.iops / f.iops, t.user_us, f.user_us))
    };
    let file = pair("t_file_qd32_uring", "k_file_qd32_uring")?;
    let null = pair("t_null_qd32_uring", "k_null_qd32_uring")?;
    Some(format!(
        "At depth the two load generators drive the same kernel path (io_uring, \
         registered buffers and file, `O_DIRECT`) and differ in their own work: \
         per I/O, fio spends {:.1} µs of guest user-space CPU on the file backend \
         and {:.1} µs on null-co, usrdrv-nvme {:.1} µs and {:.1} µs, and usrdrv-nvme \
         measures {:.2}× and {:.2}× fio's IOPS. Under TCG the guest's vCPUs and \
         QEMU's device emulation share the host's cores, and one submitting thread \
         refills the queue only after its own work on what it reaped, so a load \
         generator's own cost shows in the IOPS it gets from the same driver. The \
         rows \"both by usrdrv-nvme\" in the targets compare usrdrv with the \
         kernel as the lighter generator measures it.",
        file.2, null.2, file.1, null.1, file.0, null.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(iops: f64, user_us: f64) -> Figures {
        Figures {
            iops,
            mib_s: 0.0,
            p50: f64::NAN,
            p99: f64::NAN,
            ios: iops * 8.0,
            cpu_us: 10.0,
            user_us,
            waiting_us: f64::NAN,
            tail_doorbell_us: f64::NAN,
            tail_doorbell_each_us: f64::NAN,
            runs: 1,
        }
    }

    #[test]
    fn two_queues_says_how_busy_the_guest_was() {
        let mut r = NvmeResults::default();
        let mut fig = |key: &str, iops: f64, cpu_us: f64| {
            r.figures.insert(
                key.into(),
                Figures {
                    cpu_us,
                    ..figures(iops, 0.0)
                },
            );
        };
        fig("u_null_qd32_poll", 200_000.0, 5.0);
        fig("u_null_qd32_poll_2q", 100_000.0, 20.0);
        fig("u_null_qd32_irq", 50_000.0, 10.0);
        let missing = two_queues(&r, 2);
        assert_eq!(missing, None, "a case missing: nothing to say");
        let mut r2 = r;
        r2.figures.insert(
            "u_null_qd32_irq_2q".into(),
            Figures {
                cpu_us: 8.0,
                ..figures(75_000.0, 0.0)
            },
        );
        let text = two_queues(&r2, 2).expect("all four measured");
        assert!(
            text.contains(
                "polled, 0.50× the IOPS of one, with 2.0 guest CPUs busy (one queue: 1.0)"
            ),
            "{text}"
        );
        assert!(
            text.contains("on interrupts, 1.50× one, with 0.6 busy (one queue: 0.5)"),
            "{text}"
        );
        assert!(text.contains("the host's 2 cores"), "{text}");
    }

    #[test]
    fn the_floors_and_the_poll_loops_waiting_are_stated_per_controller() {
        let mut r = NvmeResults::default();
        assert_eq!(floors(&r), None);
        assert_eq!(waiting(&r), None);
        let floor = |p50: f64, iops: f64| Figures {
            p50,
            ..figures(iops, 0.0)
        };
        r.figures
            .insert("u_null_qd1_512_poll".into(), floor(50.0, 20_000.0));
        r.figures
            .insert("u_null_qd32_512_poll".into(), floor(140.0, 180_000.0));
        r.figures
            .insert("u_file_qd1_512_poll".into(), floor(60.0, 15_000.0));
        assert_eq!(
            floors(&r).as_deref(),
            Some("file: QD1 p50 60.0 µs; null-co: QD1 p50 50.0 µs, QD32 180.0k IOPS")
        );
        r.figures.insert(
            "u_null_qd32_poll".into(),
            Figures {
                waiting_us: 4.0,
                ..figures(160_000.0, 0.0)
            },
        );
        // The kernel's side has no waiting figure: nothing said of it.
        r.figures
            .insert("u_file_qd32_poll".into(), figures(50_000.0, 0.0));
        let text = waiting(&r).expect("null-co measured");
        assert!(
            text.contains(
                ": on null-co, 4.0 of its 10.0 µs per I/O (40%) waiting for the controller with \
                 nothing to reap."
            ),
            "{text}"
        );
        r.figures.insert(
            "u_null_qd32_poll".into(),
            Figures {
                waiting_us: 4.0,
                tail_doorbell_us: 2.5,
                tail_doorbell_each_us: 40.0,
                ..figures(160_000.0, 0.0)
            },
        );
        let text = waiting(&r).expect("null-co measured");
        assert!(
            text.contains(
                "nothing to reap, and 2.5 µs (25%) writing submission doorbells, 40 µs a write."
            ),
            "{text}"
        );
        assert!(!text.contains("file backend"), "{text}");
    }

    #[test]
    fn depth_gap_states_each_generators_own_cost() {
        let mut r = NvmeResults::default();
        r.figures
            .insert("t_file_qd32_uring".into(), figures(30_000.0, 0.8));
        r.figures
            .insert("k_file_qd32_uring".into(), figures(25_000.0, 4.4));
        assert_eq!(depth_gap(&r), None, "null-co not measured: nothing to say");
        r.figures
            .insert("t_null_qd32_uring".into(), figures(50_000.0, 0.7));
        r.figures
            .insert("k_null_qd32_uring".into(), figures(40_000.0, 5.3));
        let text = depth_gap(&r).expect("both measured");
        assert!(text.contains("fio spends 4.4 µs"), "{text}");
        assert!(
            text.contains("and 5.3 µs on null-co, usrdrv-nvme 0.8 µs and 0.7 µs"),
            "{text}"
        );
        assert!(text.contains("1.20× and 1.25×"), "{text}");
        r.figures
            .insert("k_null_qd32_uring".into(), figures(40_000.0, f64::NAN));
        assert_eq!(depth_gap(&r), None, "no user-space split: nothing to say");
    }
}
