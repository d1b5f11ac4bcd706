//! GGUF models through the binary.
//!
//! - llama.cpp's own converter output for the tiny fixtures (`../shared/parity/gguf/`, skipped
//!   with a message when absent) gives the fixtures' golden tokens, given alone;
//! - GGUFs this test writes from `tests/fixtures/` the way the converter does (`gguf/writer.rs`)
//!   give them too, so a fresh clone tests the loader (q/k permutation, tokenizer, template);
//! - the Q8_0 / Q4_0 block-diffusion models run and report their agreement with f32;
//! - candle's dequantization, which dcoder uses, is bit-exact against gguf-py's;
//! - broken files are one-line errors naming the file.

mod common;
#[path = "gguf/writer.rs"]
mod writer;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value as GgufValue;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use serde_json::Value;

use common::{assert_clean_error, cli_args, dcoder, fixture, stderr, stdout, Result};

/// A file of the shared parity kit, or `None` (with a message) where the kit is absent.
fn shared(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/parity/gguf")
        .join(name);
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "skipped: {} is absent (the shared parity kit)",
        path.display()
    );
    None
}

/// How one model's run of a fixture's cases compared with the goldens.
#[derive(Debug, Default)]
struct Agreement {
    cases: usize,
    exact_cases: usize,
    tokens: usize,
    same_tokens: usize,
}

impl Agreement {
    fn token_share(&self) -> f64 {
        self.same_tokens as f64 / self.tokens.max(1) as f64
    }
}

/// Runs every CLI-runnable case of `fixture_dir`'s goldens on `model` (plus `extra` flags);
/// `step` runs every n-th case only.
fn run_cases(model: &Path, extra: &[&str], fixture_dir: &str, step: usize) -> Result<Agreement> {
    run_cases_with(model, extra, &[], fixture_dir, step)
}

/// [`run_cases`] with environment variables for the binary.
fn run_cases_with(
    model: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    fixture_dir: &str,
    step: usize,
) -> Result<Agreement> {
    let home = tempfile::tempdir()?;
    let mut agreement = Agreement::default();
    for name in ["cases.json", "fastdllm-cases.json"] {
        let file = fixture(fixture_dir).join(name);
        if !file.is_file() {
            continue;
        }
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let runnable = cases["cases"]
            .as_array()
            .ok_or("cases")?
            .iter()
            .filter_map(|c| Some((c, cli_args(c)?)));
        for (case, args) in runnable.step_by(step) {
            let out = dcoder(home.path())
                .envs(env.iter().copied())
                .arg("--model")
                .arg(model)
                .args(extra)
                .args(&args)
                .output()?;
            assert!(out.status.success(), "{}: {}", case["id"], stderr(&out));
            let report: Value = serde_json::from_str(&stdout(&out))?;
            let got = report["tokens"].as_array().ok_or("tokens")?;
            let want = case["generated_ids"].as_array().ok_or("generated_ids")?;
            assert_eq!(
                report["prompt_tokens"], case["prompt_ids"],
                "{}: the prompt from the GGUF's tokenizer and template differs",
                case["id"]
            );
            agreement.cases += 1;
            agreement.exact_cases += usize::from(got == want);
            agreement.tokens += want.len();
            agreement.same_tokens += got.iter().zip(want).filter(|(a, b)| a == b).count();
        }
    }
    Ok(agreement)
}

fn assert_token_exact(model: &Path, extra: &[&str], fixture_dir: &str, step: usize) -> Result {
    let a = run_cases(model, extra, fixture_dir, step)?;
    eprintln!("{}: {a:?}", model.display());
    assert!(a.cases > 0, "no cases ran");
    assert_eq!(a.exact_cases, a.cases, "{}: {a:?}", model.display());
    Ok(())
}

#[test]
fn converter_f32_ggufs_give_the_golden_tokens() -> Result {
    for (file, dir) in [
        ("llada-tiny-f32.gguf", "llada-tiny"),
        ("dream-tiny-f32.gguf", "dream-tiny"),
    ] {
        if let Some(path) = shared(file) {
            assert_token_exact(&path, &[], dir, 1)?;
        }
    }
    Ok(())
}

#[test]
fn written_ggufs_give_the_golden_tokens() -> Result {
    let tmp = tempfile::tempdir()?;
    // Every third case where the converter's own files above run them all; every LLaDA-MoE
    // case (the converter cannot write the word-level stand-in tokenizer, so no such file).
    for (dir, extra, step) in [
        ("llada-tiny", &[][..], 3),
        ("dream-tiny", &[][..], 3),
        ("bd3lm-tiny", &["--family", "bd3lm"][..], 3),
        ("llada-moe-tiny", &[][..], 1),
    ] {
        let path = tmp.path().join(format!("{dir}-f32.gguf"));
        writer::convert(&fixture(dir), GgmlDType::F32)?.write(&path)?;
        assert_token_exact(&path, extra, dir, step)?;
    }
    Ok(())
}

/// LLaDA-MoE through `dcoder quantize` (its experts stacked and sliced back, the router kept in
/// f32): unquantized, token for token; Q8_0 and Q4_0 run and report their agreement.
#[test]
fn llada_moe_ggufs_written_by_dcoder_run_the_cases() -> Result {
    let tmp = tempfile::tempdir()?;
    for (ty, floor) in [("f32", 1.0), ("q8_0", 0.2), ("q4_0", 0.08)] {
        let path = tmp.path().join(format!("llada-moe-tiny-{ty}.gguf"));
        let out = dcoder(tmp.path())
            .arg("quantize")
            .arg(fixture("llada-moe-tiny"))
            .args(["--quant", ty, "-o"])
            .arg(&path)
            .output()?;
        assert!(out.status.success(), "{ty}: {}", stderr(&out));
        let a = run_cases(&path, &[], "llada-moe-tiny", 1)?;
        println!(
            "llada-moe-tiny {ty} GGUF: {}/{} golden tokens ({:.1}%), {}/{} cases exact",
            a.same_tokens,
            a.tokens,
            100.0 * a.token_share(),
            a.exact_cases,
            a.cases
        );
        assert!(a.cases >= 6 && a.token_share() >= floor, "{ty}: {a:?}");
    }
    Ok(())
}

/// Token agreement of the quantized block-diffusion models with the f32 goldens: reported, and
/// held above a floor well below what they reach (random tiny weights have small logit
/// margins, so quantization noise flips some greedy choices; a broken kernel agrees ~0%).
#[test]
fn quantized_block_diffusion_models_run_and_report_agreement() -> Result {
    let tmp = tempfile::tempdir()?;
    let mut files: Vec<(PathBuf, f64)> = Vec::new();
    files.extend(shared("bd3lm-tiny-q8_0.gguf").map(|p| (p, 0.3)));
    files.extend(shared("bd3lm-tiny-q4_0.gguf").map(|p| (p, 0.05)));
    if files.is_empty() {
        // The same Q8_0 bytes as the converter's (gguf-py and candle both round d*q as ggml).
        let written = tmp.path().join("bd3lm-tiny-q8_0-written.gguf");
        writer::convert(&fixture("bd3lm-tiny"), GgmlDType::Q8_0)?.write(&written)?;
        files.push((written, 0.3));
    }
    for (path, floor) in files {
        let a = run_cases(&path, &["--family", "bd3lm"], "bd3lm-tiny", 1)?;
        println!(
            "{}: {}/{} tokens ({:.1}%) and {}/{} cases equal to the f32 goldens",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            a.same_tokens,
            a.tokens,
            100.0 * a.token_share(),
            a.exact_cases,
            a.cases
        );
        assert!(a.token_share() >= floor, "{}: {a:?}", path.display());
    }
    // The same file with its weights dequantized to f32 (candle's CANDLE_DEQUANTIZE_ALL): the
    // weights' rounding alone, without QMatMul's Q8 quantization of the activations.
    if let Some(path) = shared("bd3lm-tiny-q8_0.gguf") {
        let dequantized = [("CANDLE_DEQUANTIZE_ALL", "1")];
        let a = run_cases_with(&path, &["--family", "bd3lm"], &dequantized, "bd3lm-tiny", 1)?;
        println!(
            "bd3lm-tiny-q8_0.gguf, weights dequantized to f32: {}/{} tokens ({:.1}%), {}/{} cases",
            a.same_tokens,
            a.tokens,
            100.0 * a.token_share(),
            a.exact_cases,
            a.cases
        );
        assert!(a.token_share() >= 0.3, "{a:?}");
    }
    Ok(())
}

/// `--no-repack` keeps one copy of quantized weights: the kernel `bench --json` names is never
/// one of candle's repacked paths (`avx512vnni`, which an AVX512-VNNI CPU takes without the
/// flag), and the config file's `no_repack = true` does the same.
#[test]
fn no_repack_keeps_one_copy_of_the_weights() -> Result {
    let tmp = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let file = tmp.path().join("bd3lm-tiny-q8_0.gguf");
    writer::convert(&fixture("bd3lm-tiny"), GgmlDType::Q8_0)?.write(&file)?;
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "no_repack = true\n")?;
    let flag = ["--no-repack"];
    let from_config = ["--config", config.to_str().ok_or("path")?];
    for extra in [&flag[..], &from_config[..]] {
        let o = dcoder(home.path())
            .arg("bench")
            .arg("--model")
            .arg(&file)
            // One thread: on more, AMX CPUs take one copy anyway.
            .args([
                "--family",
                "bd3lm",
                "--forward",
                "4",
                "--repeats",
                "1",
                "--threads",
                "1",
            ])
            .arg("--json")
            .args(extra)
            .output()?;
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let report: Value = serde_json::from_str(stdout(&o).lines().last().unwrap_or_default())?;
        let kernel = report["kernel"].as_str().unwrap_or_default();
        assert!(
            ["amx-int8", "avx2", "neon", "scalar"].contains(&kernel),
            "{extra:?}: kernel {kernel}"
        );
    }
    Ok(())
}

/// The shape and f32 values of a little-endian f32 `.npy` file.
fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path)?;
    if !bytes.starts_with(b"\x93NUMPY") || bytes[6] != 1 {
        return Err(format!("{}: not a version 1 .npy", path.display()).into());
    }
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len])?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(format!("{}: not C-ordered f32: {header}", path.display()).into());
    }
    let shape: Vec<usize> = header
        .split_once("'shape': (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .ok_or("shape")?
        .0
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let values = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

fn ggml_type(name: &str) -> Option<GgmlDType> {
    Some(match name {
        "F32" => GgmlDType::F32,
        "F16" => GgmlDType::F16,
        "BF16" => GgmlDType::BF16,
        "Q4_0" => GgmlDType::Q4_0,
        "Q4_1" => GgmlDType::Q4_1,
        "Q5_0" => GgmlDType::Q5_0,
        "Q5_1" => GgmlDType::Q5_1,
        "Q8_0" => GgmlDType::Q8_0,
        "Q2_K" => GgmlDType::Q2K,
        "Q3_K" => GgmlDType::Q3K,
        "Q4_K" => GgmlDType::Q4K,
        "Q5_K" => GgmlDType::Q5K,
        "Q6_K" => GgmlDType::Q6K,
        _ => return None,
    })
}

/// Every type of the quant zoo (tests/fixtures/gguf-zoo, see its README entry): the bytes the
/// GGUF stores dequantize, through candle, to gguf-py's values bit for bit.
#[test]
fn dequantization_is_bit_exact_against_gguf_py() -> Result {
    let zoo = fixture("gguf-zoo");
    let mut checked = Vec::new();
    for (gguf, prefix) in [
        ("quant-zoo.gguf", "quant-zoo"),
        ("quant-zoo-kquants.gguf", "quant-zoo-kquants"),
    ] {
        let index: Value = serde_json::from_str(&std::fs::read_to_string(
            zoo.join(format!("{prefix}.index.json")),
        )?)?;
        let mut reader = std::fs::File::open(zoo.join(gguf))?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
        for entry in index.as_array().ok_or("index")? {
            let ty = entry["type"].as_str().ok_or("type")?;
            let dtype = ggml_type(ty).ok_or(format!("unexpected type {ty}"))?;
            let raw = std::fs::read(zoo.join(format!("{prefix}.{ty}.raw.bin")))?;
            let (shape, want) = read_npy(&zoo.join(format!("{prefix}.{ty}.npy")))?;
            // Through the GGUF reader: the stored bytes are the raw ones.
            let name = entry["tensor"].as_str().ok_or("tensor")?;
            let stored = content.tensor(&mut reader, name, &Device::Cpu)?;
            assert_eq!(stored.dtype(), dtype, "{name}");
            assert_eq!(stored.shape().dims(), &shape[..], "{name}");
            assert_eq!(&stored.data()?[..], &raw[..], "{name}: stored bytes");
            let q = qtensor_from_ggml(dtype, &raw, shape.clone(), &Device::Cpu)?;
            let got: Vec<f32> = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(got.len(), want.len(), "{prefix}.{ty}");
            assert_eq!(
                differ, 0,
                "{prefix}.{ty}: {differ} values differ from gguf-py's"
            );
            checked.push(format!("{prefix}.{ty}"));
        }
    }
    assert_eq!(checked.len(), 13 + 5, "{checked:?}");
    Ok(())
}

/// Byte offset just after the tensor-info name `name` in a GGUF file.
fn after_name(bytes: &[u8], name: &str) -> Option<usize> {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + needle.len())
}

#[test]
fn broken_ggufs_are_one_line_errors() -> Result {
    let tmp = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let good = tmp.path().join("good.gguf");
    let base = writer::convert(&fixture("bd3lm-tiny"), GgmlDType::Q8_0)?;
    base.write(&good)?;
    let bytes = std::fs::read(&good)?;
    let run = |path: &Path, extra: &[&str]| {
        dcoder(home.path())
            .arg("--model")
            .arg(path)
            .args(extra)
            .args([
                "--gen-length",
                "8",
                "--steps",
                "8",
                "--block-length",
                "8",
                "hi",
            ])
            .output()
    };
    let family = ["--family", "bd3lm"];
    let out = run(&good, &family)?;
    assert!(out.status.success(), "{}", stderr(&out));

    // (file name, bytes, what the error says)
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.gguf",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "header-cut.gguf",
            bytes[..100].to_vec(),
            "truncated or corrupt GGUF header",
        ),
        (
            "magic.gguf",
            [b"GGUX", &bytes[4..]].concat(),
            "not a GGUF file (wrong magic",
        ),
    ];
    // An IQ4_NL tensor type (20), which candle cannot read.
    let mut unknown_type = bytes.clone();
    let at = after_name(&unknown_type, "blk.0.ffn_up.weight").ok_or("tensor info")?;
    let ty = at + 4 + 2 * 8; // n_dims (u32), two u64 dims, then the type
    unknown_type[ty..ty + 4].copy_from_slice(&20u32.to_le_bytes());
    cases.push(("type.gguf", unknown_type, "ggml type 20 (IQ4_NL)"));
    // A Q8_0 tensor of 16 values per row: not a whole number of blocks.
    let mut partial_block = bytes.clone();
    let at = after_name(&partial_block, "blk.0.ffn_gate.weight").ok_or("tensor info")?;
    partial_block[at + 4..at + 4 + 8].copy_from_slice(&16u64.to_le_bytes());
    cases.push((
        "blocks.gguf",
        partial_block,
        "rows of 16 values, not a whole number of 32-value Q8_0 blocks",
    ));
    for (name, data, needle) in &cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, data)?;
        let out = run(&path, &family)?;
        assert_clean_error(&out, needle);
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
    }

    // Metadata and tensors a loader must refuse.
    let write = |name: &str, edit: &dyn Fn(&mut writer::Gguf)| -> Result<PathBuf> {
        let mut g = writer::convert(&fixture("bd3lm-tiny"), GgmlDType::Q8_0)?;
        edit(&mut g);
        let path = tmp.path().join(name);
        g.write(&path)?;
        Ok(path)
    };
    let llama = write("llama.gguf", &|g| {
        g.set("general.architecture", GgufValue::String("llama".into()))
    })?;
    assert_clean_error(
        &run(&llama, &[])?,
        "general.architecture 'llama' is not one dcoder runs",
    );
    assert_clean_error(&run(&good, &[])?, "pass --family bd3lm or --family sdar");
    assert_clean_error(
        &run(&good, &["--family", "dream"])?,
        "--family dream: expected bd3lm or sdar",
    );
    let shape = write("shape.gguf", &|g| {
        if let Some(t) = g
            .tensors
            .iter_mut()
            .find(|(n, _)| n == "blk.1.attn_v.weight")
        {
            t.0 = "blk.1.attn_v.old".into();
        }
        if let Some(q) = g
            .tensors
            .iter()
            .find(|(n, _)| n == "blk.1.attn_q.weight")
            .and_then(|(_, q)| q.dequantize(&Device::Cpu).ok())
            .and_then(|t| candle_core::quantized::QTensor::quantize(&t, GgmlDType::Q8_0).ok())
        {
            g.tensors.push(("blk.1.attn_v.weight".into(), q));
        }
    })?;
    let out = run(&shape, &family)?;
    assert_clean_error(
        &out,
        "tensor blk.1.attn_v.weight (Q8_0) has shape [64, 32], but the metadata implies [32, 32]",
    );
    assert!(stderr(&out).contains("shape.gguf"), "{}", stderr(&out));
    let missing = write("missing.gguf", &|g| {
        g.tensors.retain(|(n, _)| n != "blk.0.ffn_up.weight")
    })?;
    assert_clean_error(&run(&missing, &family)?, "no tensor blk.0.ffn_up.weight");
    let pre = write("pre.gguf", &|g| {
        g.set("tokenizer.ggml.pre", GgufValue::String("tekken".into()))
    })?;
    assert_clean_error(&run(&pre, &family)?, "tokenizer.ggml.pre = tekken");
    let heads = write("heads.gguf", &|g| {
        g.set("qwen3.attention.head_count", GgufValue::String("4".into()))
    })?;
    assert_clean_error(&run(&heads, &family)?, "qwen3.attention.head_count is");

    // Files that are not GGUFs, folders with several, and flags that do not apply.
    let two = tmp.path().join("two");
    std::fs::create_dir(&two)?;
    std::fs::copy(&good, two.join("a.gguf"))?;
    std::fs::copy(&good, two.join("b.gguf"))?;
    assert_clean_error(&run(&two, &family)?, "2 .gguf files here (a.gguf, b.gguf)");
    let one = tmp.path().join("one");
    std::fs::create_dir(&one)?;
    std::fs::copy(&good, one.join("m.gguf"))?;
    assert!(run(&one, &family)?.status.success());
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "hi")?;
    assert_clean_error(&run(&text, &[])?, "not a .gguf");
    assert_clean_error(
        &run(&good, &["--family", "bd3lm", "--dtype", "bf16"])?,
        "drop --dtype",
    );
    assert_clean_error(&run(&good, &["--quant", "q8_0"])?, "is a GGUF file already");
    assert_clean_error(
        &run(&fixture("bd3lm-tiny"), &family)?,
        "--family bd3lm: applies to GGUF files only",
    );
    Ok(())
}

/// `dcoder quantize` writes a GGUF the loader reads (the same Q8_0 bytes as llama.cpp's
/// converter writes, so the same tokens), and `--quant` on a safetensors folder writes one
/// into dcoder's cache once, then reuses it.
#[test]
fn quantize_writes_a_gguf_and_quant_caches_one() -> Result {
    let tmp = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("bd3lm-q8_0.gguf");
    let q = dcoder(home.path())
        .arg("quantize")
        .arg(fixture("bd3lm-tiny"))
        .args(["--quant", "Q8_0", "-o"])
        .arg(&out)
        .output()?;
    assert!(q.status.success(), "{}", stderr(&q));
    assert!(out.is_file() && !out.with_extension("gguf.part").exists());
    let run = |model: &Path, extra: &[&str]| -> Result<(Value, String)> {
        let o = dcoder(home.path())
            .env("DCODER_CACHE", &cache)
            .arg("--model")
            .arg(model)
            .args(extra)
            .args([
                "--json",
                "--gen-length",
                "16",
                "--steps",
                "16",
                "--block-length",
                "8",
                "hello",
            ])
            .output()?;
        assert!(o.status.success(), "{}", stderr(&o));
        let report: Value = serde_json::from_str(&stdout(&o))?;
        Ok((report["tokens"].clone(), stderr(&o)))
    };
    let (written, _) = run(&out, &["--family", "bd3lm"])?;
    if let Some(converted) = shared("bd3lm-tiny-q8_0.gguf") {
        assert_eq!(run(&converted, &["--family", "bd3lm"])?.0, written);
    }
    let (first, note) = run(&fixture("bd3lm-tiny"), &["--quant", "q8_0"])?;
    assert!(note.contains("quantizing"), "{note}");
    assert_eq!(first, written);
    let (again, note) = run(&fixture("bd3lm-tiny"), &["--quant", "q8_0"])?;
    assert!(
        !note.contains("quantizing"),
        "the cached file is reused: {note}"
    );
    assert_eq!(again, written);
    let cached: Vec<PathBuf> = walk(&cache);
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].ends_with("q8_0.gguf"), "{cached:?}");
    // A cached file damaged after it was written (cut short here) is noticed and written again.
    let whole = std::fs::metadata(&cached[0])?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cached[0])?
        .set_len(whole / 2)?;
    let (repaired, note) = run(&fixture("bd3lm-tiny"), &["--quant", "q8_0"])?;
    assert!(
        note.contains("unreadable") && note.contains("quantizing"),
        "{note}"
    );
    assert_eq!(repaired, written);
    assert_eq!(std::fs::metadata(&cached[0])?.len(), whole);

    let bad = |args: &[&str], needle: &str| -> Result {
        let o = dcoder(home.path()).args(args).output()?;
        assert_clean_error(&o, needle);
        Ok(())
    };
    let fixture_dir = fixture("bd3lm-tiny");
    let dir = fixture_dir.to_str().ok_or("path")?;
    bad(
        &["quantize", dir, "--quant", "q9", "-o", "x.gguf"],
        "--quant q9: expected a ggml block type",
    )?;
    bad(
        &["quantize", dir, "--quant", "q8_0", "-o", "x.bin"],
        "must be a .gguf file",
    )?;
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}
