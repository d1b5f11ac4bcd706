//! The live view end to end: the real binary in a pseudo-terminal (tmux), driven with
//! send-keys and read with capture-pane, on the tiny LLaDA fixture. `.ci/run` installs tmux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use common::tmux::{exited, Tmux};
use common::Result;

fn dcoder() -> &'static str {
    env!("CARGO_BIN_EXE_dcoder")
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llada-tiny")
}

const LONG: Duration = Duration::from_secs(60);

/// The run's flags: long enough (192 steps) that the masks are on screen for a while;
/// EOS suppressed so the tiny model's answer is not empty.
fn run_args() -> String {
    format!(
        "--model {} --gen-length 192 --steps 192 --block-length 32 --suppress-eos --lang rust",
        fixture().display()
    )
}

/// The terminal works as a shell again: line editing, echo, and `stty` shows canonical mode.
fn assert_terminal_usable(t: &Tmux) -> Result {
    t.line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo ok-$((6*7))")?;
    let screen = t.wait_for("the shell to answer", LONG, |s| s.contains("ok-42"))?;
    assert!(
        screen.contains("icanon echo"),
        "terminal left in raw mode:\n{screen}"
    );
    Ok(())
}

#[test]
fn one_shot_shows_masks_then_the_answer_and_restores_the_terminal() -> Result {
    let home = tempfile::tempdir()?;
    let prompt = "Write a quicksort in Rust.";
    // What the answer is, from the same run in plain JSON mode.
    let out = Command::new(dcoder())
        .env("HF_HOME", home.path())
        .args(run_args().split(' '))
        .args(["--json", prompt])
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let answer = report["text"].as_str().ok_or("text")?.trim().to_string();
    assert!(
        !answer.is_empty(),
        "the fixture should answer something with EOS suppressed"
    );

    let t = Tmux::start(home.path())?;
    t.line(&format!(
        "{} {} '{prompt}'; echo status:$?",
        dcoder(),
        run_args()
    ))?;
    t.wait_for("masked positions under a status line", LONG, |s| {
        s.contains('░') && s.contains("step ")
    })?;
    let done = t.wait_for("the run to end", LONG, |s| exited(s).is_some())?;
    assert_eq!(exited(&done), Some(0), "{done}");
    assert!(
        !done.contains('░'),
        "the view is gone after the run:\n{done}"
    );
    assert!(
        done.contains(&answer),
        "the answer {answer:?} stays on screen:\n{done}"
    );
    assert_terminal_usable(&t)
}

#[test]
fn esc_cancels_the_one_shot_view_with_status_130() -> Result {
    let home = tempfile::tempdir()?;
    let t = Tmux::start(home.path())?;
    let args = run_args().replace("192", "2048");
    t.line(&format!(
        "{} {args} 'Write a quicksort in Rust.'; echo status:$?",
        dcoder()
    ))?;
    t.wait_for("masked positions", LONG, |s| s.contains('░'))?;
    t.keys(&["Escape"])?;
    let done = t.wait_for("the run to end", LONG, |s| exited(s).is_some())?;
    assert_eq!(exited(&done), Some(130), "{done}");
    assert!(done.contains("cancelled"), "{done}");
    assert_terminal_usable(&t)
}

#[test]
fn chat_answers_a_message_and_quits_cleanly() -> Result {
    let home = tempfile::tempdir()?;
    let t = Tmux::start(home.path())?;
    t.line(&format!(
        "{} {}; echo status:$?",
        dcoder(),
        run_args().replace("192", "64")
    ))?;
    t.wait_for("the chat", LONG, |s| s.contains("Ask for some code"))?;
    t.line("Write a quicksort in Rust.")?;
    let answered = t.wait_for("the answer's stats", LONG, |s| s.contains("steps · NFE"))?;
    assert!(
        answered.contains("› you") && answered.contains("Write a quicksort in Rust."),
        "{answered}"
    );
    t.keys(&["?"])?;
    t.wait_for("the help", LONG, |s| {
        s.contains("regenerate the last answer")
    })?;
    t.keys(&["Escape", "C-c"])?;
    let done = t.wait_for("the chat to end", LONG, |s| exited(s).is_some())?;
    assert_eq!(exited(&done), Some(0), "{done}");
    assert!(
        !done.contains("› you"),
        "the alternate screen is left:\n{done}"
    );
    assert_terminal_usable(&t)
}
