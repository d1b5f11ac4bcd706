//! How a model is prompted and its answer turned into a completion, as the reference harnesses
//! do it.
//!
//! - Base (completion) mode: the problem's prompt is continued as raw text, and the answer is cut
//!   at the first of the stop sequences of the bigcode evaluation harness (human-eval's Codex
//!   set plus `\n@`, `\n```` and friends; MBPP's set stops at the next top-level `assert`).
//! - Chat mode: EvalPlus's instruction around the prompt, through the model's chat template; the
//!   first fenced code block is taken (the whole answer if there is none), top-level test code
//!   (`if __name__ ...`, `print(...)`, `assert ...`) is dropped, and a restated function replaces
//!   the prompt's (the prompt's own definition ends at its docstring, so the later one wins).

use serde::Serialize;

use super::problem::{Family, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Base,
    Chat,
}

const HUMANEVAL_STOPS: [&str; 8] = [
    "\nclass",
    "\ndef",
    "\n#",
    "\n@",
    "\nprint",
    "\nif",
    "\n```",
    "<file_sep>",
];
const MBPP_STOPS: [&str; 7] = [
    "\nclass",
    "\nassert",
    "\n\"\"\"",
    "\nprint",
    "\nif",
    "\n```",
    "<file_sep>",
];

impl Mode {
    /// Chat mode for models with a chat template (every registry model is instruction-tuned),
    /// base mode for those without.
    pub fn for_model(has_chat_template: bool) -> Mode {
        if has_chat_template {
            Mode::Chat
        } else {
            Mode::Base
        }
    }

    /// The text sent to the model.
    pub fn prompt(self, problem: &Problem) -> String {
        match self {
            Mode::Base => problem.prompt.clone(),
            Mode::Chat => format!(
                "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```\n{}\n```\n",
                problem.prompt.trim()
            ),
        }
    }

    /// The completion scored: the text that follows the problem's prompt in the check program.
    pub fn completion(self, problem: &Problem, answer: &str) -> String {
        match self {
            Mode::Base => {
                let stops: &[&str] = match problem.family {
                    Family::HumanEval => &HUMANEVAL_STOPS,
                    Family::Mbpp => &MBPP_STOPS,
                };
                let end = stops
                    .iter()
                    .filter_map(|s| answer.find(s))
                    .min()
                    .unwrap_or(answer.len());
                answer[..end].to_string()
            }
            Mode::Chat => {
                let code = drop_top_level_tests(&first_code_block(answer));
                let restated = code
                    .lines()
                    .any(|l| l.starts_with(&format!("def {}(", problem.entry_point)));
                if restated || problem.family == Family::Mbpp {
                    format!("\n{code}")
                } else {
                    code
                }
            }
        }
    }
}

/// The first ```-fenced block's body, or the whole text when it has none (an unclosed fence runs
/// to the end).
fn first_code_block(answer: &str) -> String {
    let Some(open) = answer.find("```") else {
        return answer.to_string();
    };
    let after = &answer[open + 3..];
    let body = match after.find('\n') {
        Some(nl) => &after[nl + 1..],
        None => "",
    };
    let body = match body.find("```") {
        Some(close) => &body[..close],
        None => body,
    };
    body.to_string()
}

/// The code without top-level statements that would run tests or print at import.
fn drop_top_level_tests(code: &str) -> String {
    let mut kept = String::new();
    let mut skipping = false;
    for line in code.lines() {
        let top_level = !line.is_empty() && !line.starts_with([' ', '\t']);
        if top_level {
            skipping = line.starts_with("if __name__")
                || line.starts_with("print(")
                || line.starts_with("assert ")
                || line.starts_with("assert(");
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(family: Family) -> Problem {
        Problem {
            task_id: "T/0".into(),
            prompt: "def add(a, b):\n    \"\"\"Add.\"\"\"\n".into(),
            entry_point: "add".into(),
            test: "def check(candidate):\n    assert candidate(1, 2) == 3\n".into(),
            reference: None,
            family,
        }
    }

    #[test]
    fn base_mode_stops_at_the_end_of_the_function() {
        let p = problem(Family::HumanEval);
        let answer = "    return a + b\n\n\ndef other():\n    pass\n";
        assert_eq!(Mode::Base.completion(&p, answer), "    return a + b\n\n");
        assert_eq!(Mode::Base.prompt(&p), p.prompt);
    }

    #[test]
    fn chat_mode_takes_the_first_block_and_the_restated_function() {
        let p = problem(Family::HumanEval);
        let answer = "Sure!\n```python\ndef add(a, b):\n    return a + b\n\nprint(add(1, 2))\nif __name__ == \"__main__\":\n    main()\n```\nMore:\n```\nx\n```";
        let completion = Mode::Chat.completion(&p, answer);
        assert_eq!(completion, "\ndef add(a, b):\n    return a + b\n\n");
        assert!(p
            .program(&completion)
            .contains("return a + b\n\n\ndef check"));
        assert!(Mode::Chat.prompt(&p).contains("```\ndef add(a, b):"));
    }

    #[test]
    fn chat_mode_keeps_a_bare_body() {
        let p = problem(Family::HumanEval);
        assert_eq!(
            Mode::Chat.completion(&p, "    return a + b"),
            "    return a + b\n"
        );
    }

    #[test]
    fn mbpp_base_mode_keeps_helpers_and_stops_at_asserts() {
        let p = problem(Family::Mbpp);
        let answer =
            "def h():\n    return 1\n\ndef add(a, b):\n    return a + b\nassert add(1, 2) == 3\n";
        assert_eq!(
            Mode::Base.completion(&p, answer),
            "def h():\n    return 1\n\ndef add(a, b):\n    return a + b"
        );
    }
}
