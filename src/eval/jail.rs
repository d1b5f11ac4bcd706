//! The child side of the sandbox: `dcoder __sandbox ...`, a hidden re-exec of the dcoder binary
//! that confines itself and then becomes `python3` running the check driver.
//!
//! In order: a new session (so one `killpg` ends everything it starts); resource limits (CPU
//! time, address space, processes, file size, open files, no core dumps); as root, a new network
//! namespace and then the `nobody` user; otherwise a new user and network namespace where the
//! kernel allows it; Landlock (read everywhere, write only the sample's directory and
//! `/dev/null`, no TCP bind or connect, no signals or abstract sockets outside the sandbox);
//! then an `exec` of python with an empty environment. Each step that the kernel refuses is
//! skipped and reported in [`Isolation`], which `--probe` prints instead of running python.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{anyhow, bail, Context, Result};
use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{getegid, geteuid, setgid, setgroups, setsid, setuid, Gid, Uid};
use serde::{Deserialize, Serialize};

/// The hidden subcommand.
pub const ARG: &str = "__sandbox";
/// Exit status when confinement itself fails (python never ran).
const FAILED: u8 = 120;
/// The uid and gid samples run as when dcoder runs as root.
const NOBODY: u32 = 65534;
/// The Landlock ABI asked for (this project's machines have 7; older kernels get less).
const LANDLOCK_ABI: ABI = ABI::V7;

/// What confinement the kernel granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// A new network namespace: the sample sees only its own, unconfigured loopback.
    pub network_namespace: bool,
    /// A new user namespace (its own process count for RLIMIT_NPROC).
    pub user_namespace: bool,
    /// Landlock: "full", "partial" or "none".
    pub landlock: String,
    /// The sample ran as `nobody` (dcoder was root).
    pub dropped_root: bool,
    /// No connection can leave the sample: a network namespace, or Landlock's TCP rules.
    pub network_isolated: bool,
}

/// The limits and paths `dcoder __sandbox` is given.
#[derive(Debug, Clone, PartialEq)]
pub struct Jail {
    pub dir: PathBuf,
    pub python: PathBuf,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_bytes: u64,
    pub open_files: u64,
    /// Confine, print the [`Isolation`] as JSON and exit instead of running python.
    pub probe: bool,
}

impl Jail {
    /// The arguments after `dcoder __sandbox`.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            self.dir.clone().into(),
            self.python.clone().into(),
            self.cpu_seconds.to_string().into(),
            self.memory_bytes.to_string().into(),
            self.processes.to_string().into(),
            self.file_bytes.to_string().into(),
            self.open_files.to_string().into(),
        ];
        if self.probe {
            args.push("--probe".into());
        }
        args
    }

    fn parse(args: &[OsString]) -> Result<Jail> {
        let number = |i: usize| -> Result<u64> {
            args.get(i)
                .and_then(|a| a.to_str())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow!("argument {} is not a number", i + 1))
        };
        if args.len() < 7 {
            bail!("expected DIR PYTHON CPU MEMORY PROCESSES FILE_BYTES OPEN_FILES [--probe]");
        }
        Ok(Jail {
            dir: PathBuf::from(&args[0]),
            python: PathBuf::from(&args[1]),
            cpu_seconds: number(2)?,
            memory_bytes: number(3)?,
            processes: number(4)?,
            file_bytes: number(5)?,
            open_files: number(6)?,
            probe: args.get(7).is_some_and(|a| a == "--probe"),
        })
    }

    /// Confines this process, then runs the driver (or prints the isolation with `--probe`).
    fn enter(&self) -> Result<()> {
        setsid().context("setsid")?;
        let root = geteuid().is_root();
        let mut isolation = Isolation::default();
        if root {
            isolation.network_namespace = unshare(CloneFlags::CLONE_NEWNET).is_ok();
        }
        self.limit()?;
        // Enter the directory while still able to: as `nobody`, a parent directory that only
        // root may search (a test's TMPDIR) would refuse the path.
        std::env::set_current_dir(&self.dir)
            .with_context(|| format!("entering {}", self.dir.display()))?;
        if root {
            std::os::unix::fs::chown(&self.dir, Some(NOBODY), Some(NOBODY))
                .with_context(|| format!("chown {}", self.dir.display()))?;
            setgroups(&[]).context("setgroups")?;
            setgid(Gid::from_raw(NOBODY)).context("setgid")?;
            setuid(Uid::from_raw(NOBODY)).context("setuid")?;
            // A uid change makes the process non-dumpable, which hands /proc/self to root and
            // would refuse the id maps below; core dumps stay off through RLIMIT_CORE.
            nix::sys::prctl::set_dumpable(true).context("prctl PR_SET_DUMPABLE")?;
            isolation.dropped_root = true;
        }
        let flags = match isolation.network_namespace {
            true => CloneFlags::CLONE_NEWUSER,
            false => CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET,
        };
        if unshare(flags).is_ok() {
            isolation.user_namespace = true;
            isolation.network_namespace = true;
            map_ids()?;
        }
        // The process limit comes last: in a new user namespace it then counts that namespace's
        // processes alone, while the user's count outside keeps the limit it had (so a fork bomb
        // in one sample cannot starve the samples running beside it).
        setrlimit(Resource::RLIMIT_NPROC, self.processes, self.processes)
            .context("setrlimit RLIMIT_NPROC")?;
        isolation.landlock = Jail::landlock()?.into();
        isolation.network_isolated = isolation.network_namespace || isolation.landlock == "full";
        if self.probe {
            println!("{}", serde_json::to_string(&isolation)?);
            return Ok(());
        }
        // If dcoder dies (SIGKILL), python dies with it. Set last: credential changes clear it.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .context("prctl PR_SET_PDEATHSIG")?;
        let err = Command::new(&self.python)
            .args(["-I", "-B", "driver.py"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.dir)
            .env("TMPDIR", &self.dir)
            .env("LANG", "C.UTF-8")
            .exec();
        Err(err).with_context(|| format!("running {}", self.python.display()))
    }

    fn limit(&self) -> Result<()> {
        let limits = [
            (Resource::RLIMIT_CPU, self.cpu_seconds),
            (Resource::RLIMIT_AS, self.memory_bytes),
            (Resource::RLIMIT_FSIZE, self.file_bytes),
            (Resource::RLIMIT_NOFILE, self.open_files),
            (Resource::RLIMIT_CORE, 0),
        ];
        for (resource, value) in limits {
            setrlimit(resource, value, value).with_context(|| format!("setrlimit {resource:?}"))?;
        }
        Ok(())
    }

    /// Landlock rules; returns how much of them the kernel enforces.
    fn landlock() -> Result<&'static str> {
        let abi = LANDLOCK_ABI;
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))?
            // "." is the sample's directory (entered above); by path it may not be reachable.
            .add_rules(path_beneath_rules(
                [Path::new(".")],
                AccessFs::from_all(abi),
            ))?
            .add_rules(path_beneath_rules(
                [Path::new("/dev/null")],
                AccessFs::WriteFile,
            ))?
            .restrict_self()
            .context("landlock_restrict_self")?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => "full",
            RulesetStatus::PartiallyEnforced => "partial",
            RulesetStatus::NotEnforced => "none",
        })
    }
}

/// Maps this process's own uid and gid into its new user namespace, so that it can still create
/// files (an unmapped id cannot own one).
fn map_ids() -> Result<()> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    std::fs::write("/proc/self/setgroups", "deny").context("writing /proc/self/setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
        .context("writing /proc/self/uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
        .context("writing /proc/self/gid_map")?;
    Ok(())
}

/// `dcoder __sandbox ...`: confines and execs; `None` for every other command line. Runs before
/// anything else in `main`, so the process is still single-threaded.
pub fn intercept() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_none_or(|a| a != ARG) {
        return None;
    }
    let result = Jail::parse(&args[1..]).and_then(|jail| jail.enter());
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcoder sandbox: {e:#}");
            ExitCode::from(FAILED)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() -> Result<()> {
        let jail = Jail {
            dir: "/tmp/x".into(),
            python: "/usr/bin/python3".into(),
            cpu_seconds: 12,
            memory_bytes: 1 << 32,
            processes: 64,
            file_bytes: 1 << 26,
            open_files: 64,
            probe: true,
        };
        assert_eq!(Jail::parse(&jail.args())?, jail);
        assert!(Jail::parse(&jail.args()[..3]).is_err());
        Ok(())
    }
}
