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

/// HF name -> GGUF name pairs.
type NameMap = [(&'static str, &'static str)];

/// Which heads a tensor's rows were permuted over (LLaDA's q and k, see `GgufWeights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permuted {
    No,
    /// Rows interleaved per query head.
    QueryHeads,
    /// Rows interleaved per key/value head.
    KvHeads,
}

/// The GGUF name of HF tensor `hf` of a `body` checkpoint, and whether its rows are permuted.
pub fn gguf_name(body: Body, hf: &str) -> Option<(String, Permuted)> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    let (globals, layer_prefix, layer_map): (&NameMap, &str, &NameMap) = match body {
        Body::Llada => (
            &[
                ("model.transformer.wte", "token_embd"),
                ("model.transformer.ff_out", "output"),
                ("model.transformer.ln_f", "output_norm"),
            ],
            "model.transformer.blocks.",
            &LLADA_LAYER,
        ),
        Body::Qwen => (
            &[
                ("model.embed_tokens", "token_embd"),
                ("lm_head", "output"),
                ("model.norm", "output_norm"),
            ],
            "model.layers.",
            &QWEN_LAYER,
        ),
        Body::Llada2Moe => return None,
    };
    if let Some((_, g)) = globals.iter().find(|(h, _)| *h == stem) {
        return Some((format!("{g}.{suffix}"), Permuted::No));
    }
    let rest = stem.strip_prefix(layer_prefix)?;
    let (index, part) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (_, g) = layer_map.iter().find(|(h, _)| *h == part)?;
    let permuted = match (body, part, suffix) {
        (Body::Llada, "q_proj", "weight") => Permuted::QueryHeads,
        (Body::Llada, "k_proj", "weight") => Permuted::KvHeads,
        _ => Permuted::No,
    };
    Some((format!("blk.{index}.{g}.{suffix}"), permuted))
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
            Some(("blk.0.attn_k.weight".into(), Permuted::KvHeads))
        );
        assert_eq!(
            gguf_name(Body::Qwen, "model.layers.0.self_attn.q_proj.weight").map(|(_, p)| p),
            Some(Permuted::No)
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
}
