//! A private tmux server for the tests that drive the live view in a pseudo-terminal: send-keys
//! in, capture-pane out. `.ci/run` installs tmux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Result;

/// A private tmux server (its own socket) running one shell in a 100x30 window.
pub struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    pub fn start(home: &Path) -> Result<Tmux> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("tmux.sock");
        let shell = format!(
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color HOME={home} HF_HOME={home} HF_HUB_OFFLINE=1 XDG_CONFIG_HOME={home} PS1='$ ' bash --norc --noprofile",
            home = home.display()
        );
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "100", "-y", "30", &shell])
            .status()
            .map_err(|e| format!("tmux is needed for this test (.ci/run installs it): {e}"))?;
        assert!(status.success(), "tmux did not start");
        Ok(Tmux { socket, _dir: dir })
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket);
        cmd
    }

    /// Types `text` literally, then presses Enter.
    pub fn line(&self, text: &str) -> Result {
        self.tmux().args(["send-keys", "-l", text]).status()?;
        self.keys(&["Enter"])
    }

    pub fn keys(&self, keys: &[&str]) -> Result {
        self.tmux().arg("send-keys").args(keys).status()?;
        Ok(())
    }

    pub fn screen(&self) -> Result<String> {
        let out = self.tmux().args(["capture-pane", "-p", "-J"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls the screen until `pred` holds; the last screen in the error otherwise.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen()?;
            if pred(&screen) {
                return Ok(screen);
            }
            if start.elapsed() > timeout {
                return Err(format!("timed out waiting for {what}; screen:\n{screen}").into());
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// The exit status the shell printed after `echo "status:$?"` (not the typed command line).
pub fn exited(screen: &str) -> Option<u32> {
    screen.split("status:").skip(1).find_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}
