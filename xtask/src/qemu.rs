//! Booting the guest in QEMU and supervising it.
//!
//! The guest console (serial, `-serial stdio`) is streamed to our stdout
//! line by line and kept for parsing and error reports. The run ends when
//! the guest prints its exit marker and powers off, the timeout expires,
//! the user presses Ctrl-C, the guest kernel panics, or QEMU stops. QEMU is
//! always killed and reaped before [`run`] returns, and it gets SIGKILL
//! from the kernel if this process dies first (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::guest_results::{self, clean_line};
use crate::{interrupt, process};

/// How many console lines an error report shows.
pub const TAIL_LINES: usize = 40;

/// How long the guest may take to power off after its exit marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Emulation; works everywhere, slower.
    Tcg,
    /// Hardware virtualization; needs /dev/kvm.
    Kvm,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcg => "TCG",
            Self::Kvm => "KVM",
        })
    }
}

/// How to start QEMU.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The raw disk image behind the emulated NVMe controller.
    pub disk: PathBuf,
    /// Emulate an Intel IOMMU (with interrupt remapping).
    pub iommu: bool,
    /// Accelerator.
    pub accel: Accel,
    /// Guest memory, QEMU syntax (`1G`).
    pub memory: String,
    /// Guest CPUs.
    pub smp: u32,
    /// Extra kernel command line words.
    pub append: Vec<String>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// Stop QEMU when the guest, once ready, prints nothing for this long
    /// ([`Ending::Silent`]); `None` waits for the timeout.
    pub silence_limit: Option<Duration>,
}

impl QemuConfig {
    /// The kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut words = vec![
            "console=ttyS0",
            "loglevel=5",
            "printk.time=1",
            // Without it, TCG's unstable TSC makes ftrace print four lines.
            "trace_clock=global",
            "panic=-1",
            if self.iommu {
                "intel_iommu=on"
            } else {
                "intel_iommu=off"
            },
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        words.extend(self.append.iter().cloned());
        words.join(" ")
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["-machine", "q35"]);
        match self.accel {
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        }
        push(&["-smp", &self.smp.to_string(), "-m", &self.memory]);
        if self.iommu {
            push(&["-device", "intel-iommu,intremap=on,caching-mode=on"]);
        }
        push(&["-device", "edu"]);
        let drive = format!("file={},if=none,id=nvm0,format=raw", self.disk.display());
        push(&["-drive", &drive]);
        push(&["-device", "nvme,serial=usrdrv-nvme0,drive=nvm0"]);
        // Namespace 2 of the same controller: media errors on cue;
        // namespace 3: every command answered late.
        push(&["-drive", &error_namespace_drive()]);
        push(&["-device", "nvme-ns,drive=nvmerr,nsid=2"]);
        push(&["-drive", SLOW_NAMESPACE_DRIVE]);
        push(&["-device", "nvme-ns,drive=nvmslow,nsid=3"]);
        args.push("-kernel".into());
        args.push(self.kernel.clone().into());
        args.push("-initrd".into());
        args.push(self.initramfs.clone().into());
        args.push("-append".into());
        args.push(self.kernel_cmdline().into());
        for a in [
            "-display",
            "none",
            "-vga",
            "none",
            "-nic",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ] {
            args.push(a.into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }
}

/// Namespace 2 of the test controller: 16 MiB of QEMU's `null-co` (reads
/// return zeroes, writes are dropped) under its `blkdebug` driver, which
/// fails I/O with EIO as its rules say. The rules are armed by the
/// namespace's first write (blkdebug's `pwritev` event) and then stay: a read
/// touching LBA 2048 (512-byte blocks) fails, which QEMU's controller
/// reports as Unrecovered Read Error, and a write touching LBA 4096 fails,
/// reported as Write Fault. Away from the blocks the kernel reads when it
/// scans a disk (the start and the end). The NVMe guest tests rely on these
/// numbers (`guest_nvme.rs`).
fn error_namespace_drive() -> String {
    const READ_ERROR_SECTOR: u32 = 2048;
    const WRITE_ERROR_SECTOR: u32 = 4096;
    let rule = |n: u32, iotype: &str, sector: u32| {
        format!(
            "inject-error.{n}.event=pwritev,inject-error.{n}.iotype={iotype},\
             inject-error.{n}.sector={sector},inject-error.{n}.errno=5,inject-error.{n}.once=off"
        )
    };
    format!(
        "driver=blkdebug,if=none,id=nvmerr,image.driver=null-co,image.size=16M,\
         image.read-zeroes=on,{},{}",
        rule(0, "read", READ_ERROR_SECTOR),
        rule(1, "write", WRITE_ERROR_SECTOR)
    )
}

/// Namespace 3 of the test controller: 16 MiB of `null-co` that answers
/// every command 100 ms late (`latency-ns`), for the NVMe driver's deadline,
/// abort and reset paths (`guest_nvme.rs`). Short, since the kernel's driver
/// reads a few blocks of it each time it takes the controller.
const SLOW_NAMESPACE_DRIVE: &str =
    "driver=null-co,if=none,id=nvmslow,size=16M,read-zeroes=on,latency-ns=100000000";

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest printed its exit marker with this status.
    Exited(i32),
    /// The timeout expired; QEMU was killed.
    TimedOut(Duration),
    /// Ctrl-C; QEMU was killed.
    Interrupted,
    /// The guest kernel panicked, with the panic message.
    KernelPanic(String),
    /// QEMU stopped without the exit marker.
    QemuStopped(String),
    /// The guest kernel could not unpack the image (what it said); QEMU was
    /// stopped before anything ran on a truncated image.
    BrokenImage(String),
    /// A guest CPU's timer stopped firing (the kernel's words): QEMU was
    /// stopped, since whatever waits on that CPU would wait until the timeout.
    TimerStall(String),
    /// The guest was ready, then printed nothing for this long: QEMU was
    /// stopped (only when [`QemuConfig::silence_limit`] asks for it).
    Silent(Duration),
}

/// The record of one VM run.
#[derive(Debug)]
pub struct VmRun {
    /// Every console line, without line endings.
    pub transcript: Vec<String>,
    /// QEMU's own stderr lines.
    pub qemu_stderr: Vec<String>,
    /// From QEMU's start to the guest's ready marker.
    pub boot_time: Option<Duration>,
    /// From the ready marker to the exit marker.
    pub command_time: Option<Duration>,
    /// How the run ended.
    pub ending: Ending,
}

impl VmRun {
    /// Why the run did not end with the exit marker, or `None` if it did.
    pub fn problem(&self) -> Option<String> {
        match &self.ending {
            Ending::Exited(_) => None,
            Ending::TimedOut(t) if self.boot_time.is_none() => Some(format!(
                "timed out after {} s, before the guest was ready (booting under TCG takes \
                 about 6 s; raise --timeout)",
                t.as_secs()
            )),
            Ending::TimedOut(t) => Some(format!(
                "timed out after {} s while the guest command ran",
                t.as_secs()
            )),
            Ending::Interrupted => Some("interrupted".to_string()),
            Ending::KernelPanic(why) => Some(format!("the guest kernel panicked: {why}")),
            Ending::QemuStopped(how) => Some(format!(
                "QEMU stopped ({how}) before the guest reported an exit status"
            )),
            Ending::BrokenImage(why) => Some(format!(
                "the guest kernel could not unpack its initramfs ({why}): the image is unpacked \
                 into the guest's memory and did not fit; give the guest more with --memory \
                 (1G is the default)"
            )),
            Ending::TimerStall(why) => Some(format!(
                "a guest CPU's timer stopped firing, so QEMU was stopped (the kernel said: {why}); \
                 seen now and then under QEMU 7.2's TCG, most likely the emulator losing a timer \
                 interrupt rather than a test's doing"
            )),
            Ending::Silent(t) => Some(format!(
                "the guest printed nothing for {} s, so QEMU was stopped; under QEMU 7.2's TCG a \
                 guest whose timers stop can hang without a word, and a test that hangs does the \
                 same, so one boot like this runs again and a second counts as a failure",
                t.as_secs()
            )),
        }
    }

    /// The last console lines (and QEMU's complaints), for error reports.
    pub fn tail(&self) -> Vec<String> {
        let start = self.transcript.len().saturating_sub(TAIL_LINES);
        let mut tail = self.transcript[start..].to_vec();
        tail.extend(
            self.qemu_stderr
                .iter()
                .map(|l| format!("(qemu stderr) {l}")),
        );
        tail
    }

    /// The guest's exit status, or an error saying why there is none.
    pub fn exit_status(&self) -> Result<i32> {
        match (&self.ending, self.problem()) {
            (Ending::Exited(code), _) => Ok(*code),
            (Ending::Interrupted, _) => Err(Error::Interrupted),
            (ending, problem) => Err(Error::Guest {
                reason: format!(
                    "The VM run failed: {}",
                    problem.unwrap_or_else(|| "unknown".to_string())
                ),
                tail: self.tail(),
                timed_out: matches!(ending, Ending::TimedOut(_)),
            }),
        }
    }

    /// One line on how long things took.
    pub fn timing(&self) -> String {
        let secs = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => "n/a".to_string(),
        };
        format!(
            "boot to ready: {}, command: {}",
            secs(self.boot_time),
            secs(self.command_time)
        )
    }
}

/// Messages from the pipe reader threads.
enum Msg {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    StdoutClosed,
    StderrClosed,
}

/// Splits a byte stream into lines (lossy UTF-8, `\r` stripped).
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Adds bytes; returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            lines.push(clean_line(&String::from_utf8_lossy(&line)).to_string());
        }
        lines
    }

    /// The unterminated last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = clean_line(&String::from_utf8_lossy(&self.pending)).to_string();
        self.pending.clear();
        Some(line)
    }
}

/// Boots the VM, streams its console and returns when it is over. Only a
/// failure to start QEMU is an `Err`; everything else is in [`VmRun`].
pub fn run(config: &QemuConfig, timeout: Duration) -> Result<VmRun> {
    if config.accel == Accel::Kvm && !std::path::Path::new("/dev/kvm").exists() {
        return Err(Error::Setup(
            "--accel kvm needs /dev/kvm, which this machine does not have: use --accel tcg"
                .to_string(),
        ));
    }
    let mut cmd = Command::new(&config.qemu);
    cmd.args(config.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    process::announce(&cmd);
    let start = Instant::now();
    let mut child = process::spawn_err(cmd.spawn(), &cmd)?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(out, tx.clone(), Msg::Stdout, Msg::StdoutClosed);
    }
    if let Some(err) = child.stderr.take() {
        pump(err, tx, Msg::Stderr, Msg::StderrClosed);
    }
    let mut supervisor = Supervisor {
        start,
        deadline: start + timeout,
        timeout,
        silence_limit: config.silence_limit,
        last_output: start,
        console: LineBuffer::default(),
        errors: LineBuffer::default(),
        run: VmRun {
            transcript: Vec::new(),
            qemu_stderr: Vec::new(),
            boot_time: None,
            command_time: None,
            ending: Ending::QemuStopped("unknown".to_string()),
        },
        ready_at: None,
        exit: None,
        panic: None,
        broken_image: None,
        timer_stall: None,
    };
    let ending = supervisor.watch(&mut child, &rx);
    supervisor.flush();
    supervisor.run.ending = ending;
    Ok(supervisor.run)
}

/// State of one supervised run.
struct Supervisor {
    start: Instant,
    deadline: Instant,
    timeout: Duration,
    silence_limit: Option<Duration>,
    /// When the guest's console last printed anything.
    last_output: Instant,
    console: LineBuffer,
    errors: LineBuffer,
    run: VmRun,
    ready_at: Option<Instant>,
    exit: Option<(i32, Instant)>,
    panic: Option<String>,
    /// The kernel failed to unpack the image, before the guest was ready.
    broken_image: Option<String>,
    /// The kernel reported a CPU whose timer stopped firing.
    timer_stall: Option<String>,
}

impl Supervisor {
    /// Loops until the run is over; QEMU is dead and reaped on return.
    fn watch(&mut self, child: &mut Child, rx: &Receiver<Msg>) -> Ending {
        let mut stdout_open = true;
        loop {
            if interrupt::requested() {
                kill(child);
                return Ending::Interrupted;
            }
            let now = Instant::now();
            if let Some((code, at)) = self.exit
                && now >= at + POWEROFF_GRACE
            {
                eprintln!("xtask: the guest did not power off; stopping QEMU");
                kill(child);
                return Ending::Exited(code);
            }
            if now >= self.deadline {
                kill(child);
                return Ending::TimedOut(self.timeout);
            }
            if let Some(why) = self.broken_image.take() {
                kill(child);
                return Ending::BrokenImage(why);
            }
            if self.exit.is_none()
                && let Some(why) = self.timer_stall.take()
            {
                kill(child);
                return Ending::TimerStall(why);
            }
            if let Some(limit) = self.silence_limit
                && self.ready_at.is_some()
                && self.exit.is_none()
                && now >= self.last_output + limit
            {
                kill(child);
                return Ending::Silent(limit);
            }
            if !stdout_open {
                // QEMU closes its stdout when it exits; reap it.
                return match wait_briefly(child) {
                    Some(status) => self.ending_after_exit(status),
                    None => {
                        kill(child);
                        self.ending_after_exit("it closed its output but did not exit".to_string())
                    }
                };
            }
            let wait = (self.deadline - now).min(Duration::from_millis(100));
            match rx.recv_timeout(wait) {
                Ok(Msg::Stdout(bytes)) => {
                    self.last_output = Instant::now();
                    let lines = self.console.push(&bytes);
                    self.console_lines(lines);
                }
                Ok(Msg::Stderr(bytes)) => {
                    let lines = self.errors.push(&bytes);
                    self.stderr_lines(lines);
                }
                Ok(Msg::StdoutClosed) | Err(RecvTimeoutError::Disconnected) => stdout_open = false,
                Ok(Msg::StderrClosed) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// How the run ended once QEMU exited by itself.
    fn ending_after_exit(&mut self, status: String) -> Ending {
        self.flush();
        if let Some((code, _)) = self.exit {
            Ending::Exited(code)
        } else if let Some(why) = self.panic.clone() {
            Ending::KernelPanic(why)
        } else {
            Ending::QemuStopped(status)
        }
    }

    fn console_lines(&mut self, lines: Vec<String>) {
        let mut stdout = io::stdout().lock();
        for line in lines {
            // A closed stdout must not stop the supervision.
            let _ = writeln!(stdout, "{line}");
            let now = Instant::now();
            if self.ready_at.is_none() && guest_results::is_ready(&line) {
                self.ready_at = Some(now);
                self.run.boot_time = Some(now - self.start);
            }
            if self.exit.is_none()
                && let Some(code) = guest_results::exit_status(&line)
            {
                self.exit = Some((code, now));
                self.run.command_time = self.ready_at.map(|r| now - r);
            }
            if self.panic.is_none() {
                self.panic = guest_results::kernel_panic(&line);
            }
            if self.ready_at.is_none() && self.broken_image.is_none() {
                self.broken_image = guest_results::initramfs_failure(&line);
            }
            if self.timer_stall.is_none() {
                self.timer_stall = guest_results::timer_stall(&line);
            }
            self.run.transcript.push(line);
        }
        let _ = stdout.flush();
    }

    fn stderr_lines(&mut self, lines: Vec<String>) {
        for line in lines {
            eprintln!("{line}");
            self.run.qemu_stderr.push(line);
        }
    }

    /// Handles unterminated last lines.
    fn flush(&mut self) {
        if let Some(line) = self.console.finish() {
            self.console_lines(vec![line]);
        }
        if let Some(line) = self.errors.finish() {
            self.stderr_lines(vec![line]);
        }
    }
}

/// Reads `source` on a thread, sending chunks until EOF.
fn pump<R: Read + Send + 'static>(
    mut source: R,
    tx: Sender<Msg>,
    data: fn(Vec<u8>) -> Msg,
    closed: Msg,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(data(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(closed);
    });
}

/// Kills and reaps QEMU. Errors mean it is already gone.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to 5 s for a child that closed its stdout to exit.
fn wait_briefly(child: &mut Child) -> Option<String> {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(status)) => return Some(process::describe_status(status)),
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    None
}

/// Makes the kernel SIGKILL the child when this process dies, even by
/// SIGKILL, so QEMU is never left behind.
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    let hook = move || -> io::Result<()> {
        let sig = libc::SIGKILL as libc::c_ulong;
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) only reads its integer
        // arguments; it is async-signal-safe, as required after fork.
        let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid has no preconditions and is async-signal-safe.
        let ppid = unsafe { libc::getppid() };
        // If we died before prctl took effect, the child was re-parented.
        if u32::try_from(ppid).ok() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec; it calls
    // only async-signal-safe functions and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iommu: bool) -> QemuConfig {
        QemuConfig {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/vmlinuz".into(),
            initramfs: "/r/initramfs.cpio".into(),
            disk: "/r/nvme.img".into(),
            iommu,
            accel: Accel::Tcg,
            memory: "1G".to_string(),
            smp: 2,
            append: vec!["foo=1".to_string()],
            extra_args: vec!["-s".to_string()],
            silence_limit: None,
        }
    }

    /// A stand-in for QEMU: a script that prints `console` and then sleeps.
    fn quiet_guest(dir: &std::path::Path, console: &str) -> QemuConfig {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("qemu");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nprintf '{console}'\nexec sleep 30\n"),
        )
        .expect("write the script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
        QemuConfig {
            qemu: script,
            silence_limit: Some(Duration::from_millis(500)),
            ..config(false)
        }
    }

    #[test]
    fn a_ready_guest_that_goes_quiet_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = quiet_guest(dir.path(), "usrdrv-guest-ready: up\\ntest a ... ");
        let start = Instant::now();
        let run = run(&config, Duration::from_secs(20)).expect("the script starts");
        assert_eq!(run.ending, Ending::Silent(Duration::from_millis(500)));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        let problem = run.problem().expect("a problem");
        assert!(problem.contains("printed nothing for 0 s"), "{problem}");
        // Not ready yet: only the timeout stops it.
        let config = quiet_guest(dir.path(), "booting\\n");
        let booting = super::run(&config, Duration::from_secs(2)).expect("the script starts");
        assert_eq!(booting.ending, Ending::TimedOut(Duration::from_secs(2)));
    }

    fn args(c: &QemuConfig) -> Vec<String> {
        c.args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn iommu_on() {
        let a = args(&config(true));
        let joined = a.join(" ");
        assert!(
            joined.contains("-machine q35 -accel tcg -cpu max -smp 2 -m 1G"),
            "{joined}"
        );
        assert!(joined.contains("-device intel-iommu,intremap=on,caching-mode=on"));
        assert!(joined.contains("-device edu"));
        assert!(joined.contains("-device nvme,serial=usrdrv-nvme0,drive=nvm0"));
        assert!(joined.contains("file=/r/nvme.img,if=none,id=nvm0,format=raw"));
        assert!(joined.contains("-device nvme-ns,drive=nvmerr,nsid=2"));
        assert!(
            joined.contains(
                "inject-error.0.event=pwritev,inject-error.0.iotype=read,\
                 inject-error.0.sector=2048,inject-error.0.errno=5,inject-error.0.once=off"
            ),
            "{joined}"
        );
        assert!(joined.contains("inject-error.1.iotype=write,inject-error.1.sector=4096"));
        assert!(joined.contains("latency-ns=100000000 -device nvme-ns,drive=nvmslow,nsid=3"));
        assert!(joined.ends_with("-no-reboot -s"), "{joined}");
        let append = &a[a.iter().position(|x| x == "-append").expect("append") + 1];
        assert!(append.contains("intel_iommu=on"));
        assert!(append.contains("console=ttyS0"));
        assert!(append.contains("panic=-1"));
        assert!(append.ends_with(" foo=1"));
    }

    #[test]
    fn iommu_off() {
        let joined = args(&config(false)).join(" ");
        assert!(!joined.contains("intel-iommu"));
        assert!(joined.contains("intel_iommu=off"));
    }

    #[test]
    fn kvm() {
        let mut c = config(true);
        c.accel = Accel::Kvm;
        assert!(args(&c).join(" ").contains("-accel kvm -cpu host"));
    }

    #[test]
    fn line_buffer_handles_crlf_and_partial_lines() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"hello\r\nwor"), ["hello"]);
        assert!(b.push(b"ld").is_empty());
        assert_eq!(b.push(b"\r\n\r\nx"), ["world", ""]);
        assert_eq!(b.finish().as_deref(), Some("x"));
        assert_eq!(b.finish(), None);
        assert_eq!(b.push(&[0xff, b'\n']), ["\u{fffd}"]);
    }

    fn run_with(ending: Ending) -> VmRun {
        VmRun {
            transcript: (0..100).map(|i| format!("line {i}")).collect(),
            qemu_stderr: vec!["qemu-system-x86_64: oops".to_string()],
            boot_time: Some(Duration::from_millis(5800)),
            command_time: None,
            ending,
        }
    }

    #[test]
    fn missing_exit_marker_is_never_success() {
        let run = run_with(Ending::QemuStopped("exit status 0".to_string()));
        let err = run.exit_status().expect_err("no marker, no success");
        let Error::Guest {
            reason,
            tail,
            timed_out,
        } = err
        else {
            panic!("wrong error")
        };
        assert!(
            reason.contains("before the guest reported an exit status"),
            "{reason}"
        );
        assert_eq!(tail.len(), TAIL_LINES + 1);
        assert_eq!(tail[0], "line 60");
        assert!(!timed_out);
    }

    #[test]
    fn endings() {
        assert_eq!(run_with(Ending::Exited(3)).exit_status().ok(), Some(3));
        let Err(Error::Guest {
            timed_out, reason, ..
        }) = run_with(Ending::TimedOut(Duration::from_secs(5))).exit_status()
        else {
            panic!("timeout is an error")
        };
        assert!(timed_out);
        assert!(reason.contains("timed out after 5 s"), "{reason}");
        assert!(matches!(
            run_with(Ending::Interrupted).exit_status(),
            Err(Error::Interrupted)
        ));
        let Err(Error::Guest { reason, .. }) =
            run_with(Ending::KernelPanic("Fatal exception".to_string())).exit_status()
        else {
            panic!("panic is an error")
        };
        assert!(reason.contains("panicked: Fatal exception"), "{reason}");
        let Err(Error::Guest { reason, .. }) = run_with(Ending::TimerStall(
            "rcu: timer wakeup didn't happen".to_string(),
        ))
        .exit_status() else {
            panic!("a stalled guest is an error")
        };
        assert!(
            reason.contains("timer stopped firing") && reason.contains("wakeup didn't happen"),
            "{reason}"
        );
        let Err(Error::Guest { reason, .. }) =
            run_with(Ending::BrokenImage("write error".to_string())).exit_status()
        else {
            panic!("a broken image is an error")
        };
        assert!(
            reason.contains("could not unpack its initramfs (write error)")
                && reason.contains("--memory"),
            "{reason}"
        );
        assert_eq!(
            run_with(Ending::Exited(0)).timing(),
            "boot to ready: 5.8 s, command: n/a"
        );
    }
}
