//! A model ready to generate: the network on its device, the tokenizer with the special tokens,
//! the chat template and the sampler defaults that apply to it. One-shot runs, chat, and the
//! benchmark all start here.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;

use crate::allocator;
use crate::chat_template::ChatTemplate;
use crate::conversation::Conversation;
use crate::device::{
    available_memory, describe, ensure_fits, fitting_quant, pick_device, pick_dtype,
};
use crate::diffusion::{self, Generation, Plan, Step};
use crate::gguf::{self, weights::GgufBackend, GgufModel};
use crate::hub::{self, Source};
use crate::model::{quant_kernel, Config, Model, Precision, Weights};
use crate::registry::{Arch, ArchSpec, Registry};
use crate::settings::{self, Defaults};
use crate::tokenizer::{self, TokenFiles, Tokenizer};

/// How `--model` is read beyond its name: `--family` (a GGUF's sampler family) and `--quant`
/// (which GGUF file of a hub repo).
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub family: Option<Arch>,
    pub quant: Option<String>,
}

/// How to load: `--device`, `--dtype`.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub device: String,
    pub dtype: Option<String>,
    /// `--no-repack`: quantized weights stay one copy on the CPU.
    pub no_repack: bool,
}

pub struct Session {
    /// Registry name, repo id or folder: what reports call the model.
    pub label: String,
    pub arch: Arch,
    pub arch_spec: &'static ArchSpec,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// The model card's sampler defaults over the architecture's.
    pub defaults: Defaults,
    pub max_positions: usize,
    pub device: Device,
    /// Time to read config, tokenizer and weights (downloads excluded).
    pub load_time: Duration,
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn read_optional_json(path: Option<&Path>) -> Result<Option<Value>> {
    path.map(read_json).transpose()
}

/// The architecture a config.json describes, from its `architectures` class where the registry
/// names one (LLaDA-MoE shares dense LLaDA's `model_type`), else from its `model_type`.
fn detect_arch(config: &Value, registry: &Registry, path: &Path) -> Result<Arch> {
    let classes: Vec<&str> = config["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(arch) = registry.arch_for_class(&classes) {
        return Ok(arch);
    }
    let Some(model_type) = config.get("model_type").and_then(Value::as_str) else {
        bail!(
            "{}: no `model_type`; cannot tell which network this is",
            path.display()
        );
    };
    registry.arch_for_model_type(model_type).ok_or_else(|| {
        anyhow!(
            "{}: model_type '{model_type}' is not a diffusion model dcoder runs (supported: {})",
            path.display(),
            registry.known_model_types().join(", ")
        )
    })
}

/// A model's files and config, read and checked; the weights are not loaded yet, so flag
/// errors surface before the slow part.
pub struct Checkpoint {
    pub label: String,
    /// The model card's context limit, when the registry gives one.
    context: Option<usize>,
    format: Format,
    pub arch: Arch,
    config_json: Value,
    config: Config,
    /// The model card's sampler defaults over the architecture's.
    pub defaults: Defaults,
    /// A registry model: it gets the fast defaults (bf16 on a CPU that has the kernel); a
    /// local folder gets the reference's f32.
    registry: bool,
}

/// Where a checkpoint's files are.
enum Format {
    /// A Hugging Face folder: config.json, tokenizer files, safetensors.
    Hf(hub::ModelFiles),
    /// One GGUF file holding all of it.
    Gguf(GgufModel),
}

impl Checkpoint {
    /// Finds (downloading if needed) and reads the checkpoint `source` names.
    pub fn locate(source: &Source) -> Result<Checkpoint> {
        Self::locate_with(source, &SourceOptions::default())
    }

    /// [`Checkpoint::locate`] with `--family` / `--quant`.
    pub fn locate_with(source: &Source, opts: &SourceOptions) -> Result<Checkpoint> {
        let gguf_file = match (source, &opts.quant) {
            (Source::Dir(path), None) => gguf::find_file(path)?,
            (Source::Dir(path), Some(q)) => match gguf::find_file(path)? {
                Some(file) => bail!("--quant {q}: {} is a GGUF file already; --quant picks a file in a hub repo of GGUF files, or quantizes a safetensors model", file.display()),
                None => return Self::quantized(source, q),
            },
            (Source::Repo { repo, revision }, Some(q)) => match hub::repo_has_config(repo, revision) {
                false => Some(hub::locate_gguf(repo, revision, q)?),
                true => return Self::quantized(source, q),
            },
            (Source::Registry(_), Some(q)) => return Self::quantized(source, q),
            _ => None,
        };
        if let Some(path) = gguf_file {
            return Self::from_gguf(source, &path, opts.family);
        }
        if let Some(family) = opts.family {
            bail!("--family {}: applies to GGUF files only (a model folder's config.json names its architecture)", family.name());
        }
        let registry = Registry::builtin()?;
        let files = hub::locate(source)?;
        let config_json = read_json(&files.config)?;
        let arch = match source.spec() {
            Some(spec) => spec.arch,
            None => detect_arch(&config_json, registry, &files.config)?,
        };
        let config = Config::parse(arch.body(), &config_json).with_context(|| {
            format!(
                "{}: unusable {} config",
                files.config.display(),
                arch.name()
            )
        })?;
        let model_defaults = source
            .spec()
            .map(|s| s.defaults.clone())
            .unwrap_or_default();
        Ok(Checkpoint {
            label: source.label(),
            context: source.spec().and_then(|s| s.context),
            defaults: model_defaults.over(&registry.arch(arch)?.defaults),
            format: Format::Hf(files),
            arch,
            config_json,
            config,
            registry: source.spec().is_some(),
        })
    }

    /// `--quant TYPE` on a safetensors model: its GGUF in dcoder's cache, written once
    /// (atomically) and read like any GGUF; the registry's facts (label, defaults, context) kept.
    fn quantized(source: &Source, quant: &str) -> Result<Checkpoint> {
        let ty = gguf::file::parse_type(quant)?;
        let hf = Self::locate(source)?;
        let Format::Hf(files) = &hf.format else {
            bail!("--quant {quant}: {} is already a GGUF", hf.label);
        };
        let path = gguf::cache::path_for(source, files, ty)?;
        // The file is written under a temporary name and renamed when whole, so a cut-off
        // write never has this name; a cached file that still fails the reader's checks (every
        // tensor inside the file, a known type) was damaged afterwards and is written again.
        let cached = match path.is_file() {
            true => match Self::from_gguf(source, &path, Some(hf.arch)) {
                Ok(checkpoint) => Some(checkpoint),
                Err(err) => {
                    eprintln!(
                        "note: the cached {} is unreadable ({}); quantizing again",
                        path.display(),
                        err.root_cause()
                    );
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    None
                }
            },
            false => None,
        };
        let mut checkpoint = match cached {
            Some(checkpoint) => checkpoint,
            None => {
                eprintln!(
                    "quantizing {} to {quant} once: {}",
                    hf.label,
                    path.display()
                );
                hf.write_gguf(ty, &path)?;
                Self::from_gguf(source, &path, Some(hf.arch))?
            }
        };
        checkpoint.label = format!("{} ({})", hf.label, gguf::file::lower_name(ty));
        checkpoint.context = hf.context;
        checkpoint.defaults = hf.defaults;
        Ok(checkpoint)
    }

    /// Writes this safetensors checkpoint as a GGUF with matmul weights in `ty`.
    pub fn write_gguf(&self, ty: candle_core::quantized::GgmlDType, out: &Path) -> Result<()> {
        let Format::Hf(files) = &self.format else {
            bail!("{} is a GGUF file already", self.label);
        };
        let arch_spec = Registry::builtin()?.arch(self.arch)?;
        let (tokenizer, template) = hf_tokens(files, &self.config_json, arch_spec)?;
        let json = tokenizer.to_json()?;
        let export = gguf::writer::Export {
            arch: self.arch,
            config: &self.config,
            weights: &files.weights,
            pre: gguf::tokenizer::pre_name(&json)?,
            tokenizer: json,
            special: &tokenizer.special,
            chat_template: template.as_ref().map(ChatTemplate::source),
        };
        gguf::writer::write(&export, ty, out).with_context(|| format!("quantizing {}", self.label))
    }

    fn from_gguf(source: &Source, path: &Path, family: Option<Arch>) -> Result<Checkpoint> {
        let registry = Registry::builtin()?;
        let model = GgufModel::open(path, family)?;
        let arch = model.arch;
        let config = Config::parse(arch.body(), &model.config).with_context(|| {
            format!(
                "{}: unusable {} hyper-parameters",
                path.display(),
                model.gguf_arch
            )
        })?;
        Ok(Checkpoint {
            label: match source {
                Source::Dir(_) => path.display().to_string(),
                _ => format!(
                    "{} ({})",
                    source.label(),
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ),
            },
            context: None,
            defaults: registry.arch(arch)?.defaults.clone(),
            config_json: model.config.clone(),
            format: Format::Gguf(model),
            arch,
            config,
            registry: false,
        })
    }

    /// Bytes of a GGUF's tensors as stored (`None` for safetensors, held in the load dtype).
    pub fn weight_bytes(&self) -> Option<u64> {
        match &self.format {
            Format::Gguf(g) => Some(g.weight_bytes()),
            Format::Hf(_) => None,
        }
    }

    /// Number of weights the config describes.
    pub fn parameters(&self) -> usize {
        self.config.parameters()
    }
}

impl Session {
    /// Reads the tokenizer and loads the weights onto the device.
    pub fn load(checkpoint: Checkpoint, opts: &LoadOptions) -> Result<Session> {
        let start = Instant::now();
        let Checkpoint {
            label,
            context,
            format,
            arch,
            config_json,
            config,
            defaults,
            registry,
        } = checkpoint;
        let arch_spec = Registry::builtin()?.arch(arch)?;
        let device = pick_device(&opts.device)?;
        let (tokenizer, template, model) = match format {
            Format::Hf(files) => {
                let (tokenizer, template) = hf_tokens(&files, &config_json, arch_spec)?;
                check_special(&tokenizer, &config)?;
                allocator::return_freed();
                let weights = Weights::open(&files.weights)?;
                let dtype =
                    choose_dtype(opts.dtype.as_deref(), &device, registry, weights.elements())?;
                let precision = Precision::new(dtype, &device);
                let model = Model::new(
                    &config,
                    weights.var_builder(precision.activations, &device),
                    precision,
                )
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| {
                    format!(
                        "loading the weights: they do not match {}",
                        files.config.display()
                    )
                })?;
                (tokenizer, template, model)
            }
            Format::Gguf(gguf) => {
                let (tokenizer, template) = gguf_tokens(&gguf, arch_spec)?;
                check_special(&tokenizer, &config)?;
                allocator::return_freed();
                (
                    tokenizer,
                    template,
                    gguf_model(&gguf, &config, opts, &device)?,
                )
            }
        };
        allocator::return_freed();
        Ok(Session {
            label,
            arch,
            arch_spec,
            model,
            tokenizer,
            template,
            defaults,
            max_positions: context
                .map_or(config.max_positions(), |c| c.min(config.max_positions())),
            device,
            load_time: start.elapsed(),
        })
    }

    /// A conversation with this model's template (unless `raw`) and multi-turn rule.
    pub fn conversation(&self, raw: bool, system: Option<String>) -> Result<Conversation> {
        if raw && system.is_some() {
            bail!("--system needs the chat template; drop --no-chat-template");
        }
        let template = if raw { None } else { self.template.clone() };
        if !raw && template.is_none() && system.is_some() {
            bail!("--system: {} has no chat template", self.label);
        }
        let kwargs = serde_json::to_value(&self.arch_spec.template_kwargs)?;
        Ok(Conversation::new(
            template,
            self.arch_spec.chat,
            system,
            kwargs,
        ))
    }

    /// Runs the plan on `prompt`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        plan: &Plan,
        on_step: impl FnMut(&Step) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.infill(prompt, &[], plan, on_step)
    }

    /// Runs the plan on the canvas between `prompt` and `suffix` (`--suffix`, FIM).
    pub fn infill(
        &mut self,
        prompt: &[u32],
        suffix: &[u32],
        plan: &Plan,
        on_step: impl FnMut(&Step) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let total = prompt.len() + plan.gen_length + suffix.len();
        if total > self.max_positions {
            bail!(
                "the prompt ({} tokens) plus --gen-length {} is {total} tokens, more than the {} the model handles; shorten the prompt or lower --gen-length",
                prompt.len() + suffix.len(),
                plan.gen_length,
                self.max_positions
            );
        }
        diffusion::infill(
            &mut self.model,
            prompt,
            suffix,
            plan,
            &self.tokenizer.special.ids(),
            on_step,
        )
    }

    pub fn device_name(&self) -> String {
        describe(&self.device)
    }

    pub fn dtype_name(&self) -> &'static str {
        self.model.precision().name()
    }
}

/// The tokenizer and chat template of a model folder.
fn hf_tokens(
    files: &hub::ModelFiles,
    config_json: &Value,
    arch_spec: &ArchSpec,
) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    let generation_config = read_optional_json(files.generation_config.as_deref())?;
    let tokenizer_config = read_optional_json(files.tokenizer_config.as_deref())?;
    let dir = files
        .config
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let source = match (&files.tokenizer_json, &files.vocab_json, &files.merges_txt, &arch_spec.bpe_split_regex) {
        (Some(path), ..) => tokenizer::Source::Fast(path),
        (None, Some(vocab), Some(merges), Some(split_regex)) => tokenizer::Source::SlowBpe {
            vocab,
            merges,
            added_tokens: files.added_tokens_json.as_deref(),
            split_regex,
        },
        _ => bail!("{dir}: no tokenizer.json next to config.json (nor a vocab.json + merges.txt this architecture can use)"),
    };
    let token_files = TokenFiles {
        config: config_json,
        generation_config: generation_config.as_ref(),
        tokenizer_config: tokenizer_config.as_ref(),
    };
    let tokenizer = Tokenizer::load(&source, &token_files, arch_spec)?;
    let template = ChatTemplate::find(tokenizer_config.as_ref(), files.chat_template.as_deref())?;
    Ok((tokenizer, template))
}

/// The tokenizer and chat template a GGUF's metadata describes.
fn gguf_tokens(
    gguf: &GgufModel,
    arch_spec: &ArchSpec,
) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    let token_files = TokenFiles {
        config: &gguf.config,
        generation_config: None,
        tokenizer_config: Some(&gguf.tokenizer_config),
    };
    let tokenizer = Tokenizer::from_built(gguf.tokenizer(), &token_files, arch_spec)
        .with_context(|| gguf.path().display().to_string())?;
    let template = ChatTemplate::find(Some(&gguf.tokenizer_config), None)?;
    Ok((tokenizer, template))
}

/// A GGUF's network: block-quantized matmul weights as stored, everything else in f32.
fn gguf_model(
    gguf: &GgufModel,
    config: &Config,
    opts: &LoadOptions,
    device: &Device,
) -> Result<Model> {
    let path = gguf.path().display();
    if let Some(dtype) = opts.dtype.as_deref().filter(|d| *d != "f32") {
        bail!("--dtype {dtype}: {path} runs in its stored weight types with f32 activations; drop --dtype");
    }
    // The stored tensors: quantized ones are kept as stored (the embedding too), float ones
    // are widened to f32.
    let need = gguf.weight_bytes();
    if let Some(avail) = available_memory().filter(|&a| device.is_cpu() && need > a / 20 * 19) {
        bail!(
            "{path}: the model needs {} but only {} of memory is free; a file of a smaller type would ({})",
            indicatif::HumanBytes(need),
            indicatif::HumanBytes(avail),
            fitting_quant(config.parameters() as u64, avail)
        );
    }
    let weights = gguf.weights(config.body())?;
    let precision = Precision::quantized(weights.clone(), gguf.weight_label());
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(GgufBackend(weights)),
        DType::F32,
        device.clone(),
    );
    let model = Model::new(config, vb, precision)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading {path}"))?;
    if device.is_cpu() {
        quant_kernel::plan_copies(need, available_memory(), !opts.no_repack);
    }
    Ok(model)
}

/// The special ids must index the model's logits.
fn check_special(tokenizer: &Tokenizer, config: &Config) -> Result<()> {
    let vocab = config.vocab_size();
    let special = &tokenizer.special;
    for (role, id) in [
        ("mask", Some(special.mask)),
        ("eos", Some(special.eos)),
        ("eot", special.eot),
    ] {
        if let Some(id) = id.filter(|&id| id as usize >= vocab) {
            bail!("the {role} token id {id} is outside the model's {vocab} logits; the tokenizer does not belong to these weights");
        }
    }
    Ok(())
}

/// The plan for a model of `arch` whose card's defaults are `defaults`: `flags` over them, over
/// the architecture's. The one place settings are resolved for a run.
pub fn plan_for(arch: Arch, defaults: &Defaults, flags: &Defaults, seed: u64) -> Result<Plan> {
    let spec = Registry::builtin()?.arch(arch)?;
    settings::resolve(
        flags,
        &defaults.over(&spec.defaults),
        arch.family(),
        spec.shift_logits,
        seed,
    )
}

/// `--dtype` if given; else the device default, except that on the CPU a model whose f32 copy
/// would not fit in memory loads in bf16 instead (an 8B model is 32 GB in f32).
fn choose_dtype(
    flag: Option<&str>,
    device: &Device,
    prefer_bf16: bool,
    elements: usize,
) -> Result<DType> {
    let dtype = pick_dtype(flag, device, prefer_bf16)?;
    let avail = available_memory().filter(|_| device.is_cpu());
    let dtype = match avail {
        Some(avail)
            if flag.is_none() && dtype == DType::F32 && elements as u64 * 4 > avail / 10 * 9 =>
        {
            eprintln!(
                "note: the weights need {} in f32 but {} is free; loading in bf16 (choose with --dtype)",
                indicatif::HumanBytes(elements as u64 * 4),
                indicatif::HumanBytes(avail)
            );
            DType::BF16
        }
        _ => dtype,
    };
    ensure_fits(elements, dtype, device)?;
    Ok(dtype)
}
