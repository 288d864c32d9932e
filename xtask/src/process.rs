//! Running host programs on the user's behalf.
//!
//! Every command is announced as one `xtask: running ...` line that can be
//! copied into a shell.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use crate::error::{Error, Result};
use crate::interrupt;

/// Quotes one word for a POSIX shell, only when needed.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line of `cmd` as a shell would take it, with the environment
/// variables it sets in front.
pub fn describe(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
    }
    words.push(shell_quote(&program_name(cmd.get_program())));
    words.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    words.join(" ")
}

/// The program's file name as typed (`cargo`, not `/usr/bin/cargo`) when it
/// came from `PATH` or `$CARGO`.
fn program_name(program: &OsStr) -> String {
    let path = Path::new(program);
    match path.file_name() {
        Some(name) if name == "cargo" => "cargo".to_string(),
        _ => program.to_string_lossy().into_owned(),
    }
}

/// Prints the `xtask: running ...` line for `cmd`.
pub fn announce(cmd: &Command) {
    eprintln!("xtask: running {}", describe(cmd));
}

/// Describes an exit status in words.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_string(),
    }
}

/// Announces and runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    announce(cmd);
    let status = spawn_err(cmd.status(), cmd)?;
    check_status(cmd, status, "")
}

/// Announces and runs `cmd`, capturing stdout and stderr; the output is
/// returned whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    announce(cmd);
    cmd.stdin(Stdio::null());
    let out = spawn_err(cmd.output(), cmd)?;
    interrupt::check()?;
    Ok(out)
}

/// Maps a spawn error to [`Error::Spawn`].
pub fn spawn_err<T>(r: std::io::Result<T>, cmd: &Command) -> Result<T> {
    r.map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// Turns a non-zero `status` into [`Error::CommandFailed`] (or
/// [`Error::Interrupted`] when the user pressed Ctrl-C meanwhile).
pub fn check_status(cmd: &Command, status: ExitStatus, hint: &str) -> Result<()> {
    interrupt::check()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: describe(cmd),
            status: describe_status(status),
            hint: hint.to_string(),
        })
    }
}

/// The `cargo` to use: the one that runs us (`$CARGO`), else from `PATH`.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// Finds `name` on `PATH`, also looking in the sbin directories that a
/// non-root `PATH` often lacks.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("apt-get"), "apt-get");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn describe_shows_env_and_args() {
        let mut cmd = Command::new("cargo");
        cmd.env("RUSTFLAGS", "-C x")
            .args(["build", "--target", "t"]);
        assert_eq!(describe(&cmd), "RUSTFLAGS='-C x' cargo build --target t");
    }
}
