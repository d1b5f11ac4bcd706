//! Checkpoint (Hugging Face) tensor names to the names llama.cpp's `convert_hf_to_gguf.py`
//! writes (gguf-py `tensor_mapping.py` at ggml-org/llama.cpp@0c1e5709), per network body.
//!
//! The model files ask for HF names; the GGUF backend answers through this map, so the networks
//! load a GGUF with the same code as a safetensors folder.

use crate::model::Body;

/// One layer tensor: the HF path after `blocks.{i}.` / `model.layers.{i}.`, and its GGUF name
/// after `blk.{i}.`.
const LLADA_LAYER: [(&str, &str); 9] = [
    ("attn_norm", "attn_norm"),
    ("q_proj", "attn_q"),
    ("k_proj", "attn_k"),
    ("v_proj", "attn_v"),
    ("attn_out", "attn_output"),
    ("ff_norm", "ffn_norm"),
    ("ff_proj", "ffn_gate"),
    ("up_proj", "ffn_up"),
    ("ff_out", "ffn_down"),
];

const QWEN_LAYER: [(&str, &str); 11] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// LLaDA-MoE's layer tensors besides the Qwen-named attention and norms (llama.cpp's
/// `LLaDAMoEModel` converter, gguf-py `tensor_mapping.py`); its experts are stacked.
const LLADA_MOE_LAYER: [(&str, &str); 4] = [
    ("mlp.gate", "ffn_gate_inp"),
    ("shared_expert.gate_proj", "ffn_gate_shexp"),
    ("shared_expert.up_proj", "ffn_up_shexp"),
    ("shared_expert.down_proj", "ffn_down_shexp"),
];

/// LLaDA2's layer tensors, under the names gguf-py gives its Bailing-MoE-V2 sibling
/// (`MODEL_ARCH.BAILINGMOE2` in `tensor_mapping.py`): fused qkv, per-head q/k norms, a dense
/// first layer, router, shared experts; its experts are stacked.
const LLADA2_LAYER: [(&str, &str); 13] = [
    ("input_layernorm", "attn_norm"),
    ("attention.query_key_value", "attn_qkv"),
    ("attention.dense", "attn_output"),
    ("attention.query_layernorm", "attn_q_norm"),
    ("attention.key_layernorm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.gate", "ffn_gate_inp"),
    ("mlp.shared_experts.gate_proj", "ffn_gate_shexp"),
    ("mlp.shared_experts.up_proj", "ffn_up_shexp"),
    ("mlp.shared_experts.down_proj", "ffn_down_shexp"),
];

/// HF name -> GGUF name pairs.
type NameMap = [(&'static str, &'static str)];

/// How a checkpoint tensor sits in the GGUF tensor that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As the checkpoint has it.
    Plain,
    /// Rows interleaved per query head (LLaDA's q, see `GgufWeights`).
    QueryHeads,
    /// Rows interleaved per key/value head (LLaDA's k).
    KvHeads,
    /// Expert `e` of a `[experts, out, in]` stack (`ffn_{gate,up,down}_exps`).
    Expert(usize),
}

/// The GGUF name of HF tensor `hf` of a `body` checkpoint, and how it is laid out there.
pub fn gguf_name(body: Body, hf: &str) -> Option<(String, Layout)> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    const QWEN_GLOBALS: [(&str, &str); 3] = [
        ("model.embed_tokens", "token_embd"),
        ("lm_head", "output"),
        ("model.norm", "output_norm"),
    ];
    let (globals, layer_prefix, layer_maps): (&NameMap, &str, [&NameMap; 2]) = match body {
        Body::Llada => (
            &[
                ("model.transformer.wte", "token_embd"),
                ("model.transformer.ff_out", "output"),
                ("model.transformer.ln_f", "output_norm"),
            ],
            "model.transformer.blocks.",
            [&LLADA_LAYER, &[]],
        ),
        Body::Qwen => (&QWEN_GLOBALS, "model.layers.", [&QWEN_LAYER, &[]]),
        Body::LladaMoe => (
            &QWEN_GLOBALS,
            "model.layers.",
            [&QWEN_LAYER, &LLADA_MOE_LAYER],
        ),
        Body::Llada2Moe => (
            &[
                ("model.word_embeddings", "token_embd"),
                ("lm_head", "output"),
                ("model.norm", "output_norm"),
            ],
            "model.layers.",
            [&LLADA2_LAYER, &[]],
        ),
    };
    if let Some((_, g)) = globals.iter().find(|(h, _)| *h == stem) {
        return Some((format!("{g}.{suffix}"), Layout::Plain));
    }
    let rest = stem.strip_prefix(layer_prefix)?;
    let (index, part) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let moe = matches!(body, Body::LladaMoe | Body::Llada2Moe);
    // The router's bias: LLaDA-MoE's `mlp.expert_bias`, LLaDA2's `mlp.gate.expert_bias`.
    if moe && suffix == "expert_bias" && matches!(part, "mlp" | "mlp.gate") {
        return Some((format!("blk.{index}.exp_probs_b.bias"), Layout::Plain));
    }
    if let Some(expert) = part.strip_prefix("mlp.experts.").filter(|_| moe) {
        let (e, proj) = expert.split_once('.')?;
        let g = match proj {
            "gate_proj" => "ffn_gate_exps",
            "up_proj" => "ffn_up_exps",
            "down_proj" => "ffn_down_exps",
            _ => return None,
        };
        return Some((
            format!("blk.{index}.{g}.{suffix}"),
            Layout::Expert(e.parse().ok()?),
        ));
    }
    let (_, g) = layer_maps
        .iter()
        .flat_map(|m| m.iter())
        .find(|(h, _)| *h == part)?;
    let layout = match (body, part, suffix) {
        (Body::Llada, "q_proj", "weight") => Layout::QueryHeads,
        (Body::Llada, "k_proj", "weight") => Layout::KvHeads,
        _ => Layout::Plain,
    };
    Some((format!("blk.{index}.{g}.{suffix}"), layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_names_the_converter_writes() {
        // Pairs from ../shared/parity/gguf/name_map.json (made by the converter itself).
        let cases = [
            (
                Body::Llada,
                "model.transformer.wte.weight",
                "token_embd.weight",
            ),
            (
                Body::Llada,
                "model.transformer.ff_out.weight",
                "output.weight",
            ),
            (
                Body::Llada,
                "model.transformer.ln_f.weight",
                "output_norm.weight",
            ),
            (
                Body::Llada,
                "model.transformer.blocks.1.ff_out.weight",
                "blk.1.ffn_down.weight",
            ),
            (
                Body::Llada,
                "model.transformer.blocks.0.ff_proj.weight",
                "blk.0.ffn_gate.weight",
            ),
            (
                Body::Llada,
                "model.transformer.blocks.0.attn_out.weight",
                "blk.0.attn_output.weight",
            ),
            (Body::Qwen, "lm_head.weight", "output.weight"),
            (
                Body::Qwen,
                "model.layers.0.self_attn.k_proj.bias",
                "blk.0.attn_k.bias",
            ),
            (
                Body::Qwen,
                "model.layers.3.self_attn.q_norm.weight",
                "blk.3.attn_q_norm.weight",
            ),
            (
                Body::Qwen,
                "model.layers.0.post_attention_layernorm.weight",
                "blk.0.ffn_norm.weight",
            ),
            (
                Body::Qwen,
                "model.layers.0.mlp.down_proj.weight",
                "blk.0.ffn_down.weight",
            ),
        ];
        for (body, hf, want) in cases {
            assert_eq!(
                gguf_name(body, hf).map(|(g, _)| g).as_deref(),
                Some(want),
                "{hf}"
            );
        }
        assert_eq!(
            gguf_name(Body::Llada, "model.transformer.blocks.0.k_proj.weight"),
            Some(("blk.0.attn_k.weight".into(), Layout::KvHeads))
        );
        assert_eq!(
            gguf_name(Body::Qwen, "model.layers.0.self_attn.q_proj.weight").map(|(_, p)| p),
            Some(Layout::Plain)
        );
        assert_eq!(
            gguf_name(Body::Qwen, "model.layers.x.mlp.up_proj.weight"),
            None
        );
        assert_eq!(
            gguf_name(Body::Llada, "model.transformer.blocks.0.nope.weight"),
            None
        );
    }

    #[test]
    fn experts_map_to_their_slice_of_the_stacked_tensors() {
        let cases = [
            (
                Body::LladaMoe,
                "model.layers.2.mlp.experts.17.up_proj.weight",
                ("blk.2.ffn_up_exps.weight", Layout::Expert(17)),
            ),
            (
                Body::LladaMoe,
                "model.layers.0.mlp.gate.weight",
                ("blk.0.ffn_gate_inp.weight", Layout::Plain),
            ),
            (
                Body::LladaMoe,
                "model.layers.1.mlp.expert_bias",
                ("blk.1.exp_probs_b.bias", Layout::Plain),
            ),
            (
                Body::LladaMoe,
                "model.layers.1.self_attn.q_norm.weight",
                ("blk.1.attn_q_norm.weight", Layout::Plain),
            ),
            (
                Body::Llada2Moe,
                "model.layers.3.mlp.experts.0.down_proj.weight",
                ("blk.3.ffn_down_exps.weight", Layout::Expert(0)),
            ),
            (
                Body::Llada2Moe,
                "model.layers.3.mlp.gate.expert_bias",
                ("blk.3.exp_probs_b.bias", Layout::Plain),
            ),
            (
                Body::Llada2Moe,
                "model.layers.0.attention.query_key_value.weight",
                ("blk.0.attn_qkv.weight", Layout::Plain),
            ),
            (
                Body::Llada2Moe,
                "model.layers.1.mlp.shared_experts.gate_proj.weight",
                ("blk.1.ffn_gate_shexp.weight", Layout::Plain),
            ),
            (
                Body::Llada2Moe,
                "model.word_embeddings.weight",
                ("token_embd.weight", Layout::Plain),
            ),
        ];
        for (body, hf, (name, layout)) in cases {
            assert_eq!(
                gguf_name(body, hf),
                Some((name.to_string(), layout)),
                "{hf}"
            );
        }
        // Dense bodies have no experts.
        assert_eq!(
            gguf_name(Body::Qwen, "model.layers.0.mlp.experts.1.up_proj.weight"),
            None
        );
    }
}
