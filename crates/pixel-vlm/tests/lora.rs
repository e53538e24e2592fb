//! LoRA against PEFT (`scripts/gen_lora_fixtures.py` wrote `tests/fixtures/lora/`): a PEFT adapter on
//! tiny_flat's decoder and vision blocks loads, gives PEFT's logits and autograd gradients, merges into the
//! same logits, saves in PEFT's format byte for byte as the committed folder that PEFT read back, and every
//! malformed adapter is a typed error.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use common::{B, Fixture, crate_dir, max_abs_diff, model_dir};
use pixel_vlm::lora::{LoraConfig, LoraSite, LoraTarget, Tower};
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput, VlmError};

type AB = Autodiff<B>;

fn lora_dir(name: &str) -> PathBuf {
    crate_dir().join("tests/fixtures/lora").join(name)
}

fn expected() -> Fixture {
    Fixture::from_path(&lora_dir("tiny_flat_peft").join("expected.safetensors"))
}

/// The batch of `tiny_flat/expected_grad.safetensors` (the script feeds PEFT the same one).
struct Batch {
    ids: Vec<u32>,
    positions: Vec<i64>,
    valid: Vec<bool>,
    targets: Vec<u32>,
    temperature: Vec<f32>,
    score: Vec<f32>,
    visual: VisualInput,
    batch: usize,
    seq: usize,
}

impl Batch {
    fn load() -> Self {
        let f = Fixture::load("tiny_flat", "grad");
        let (ids, shape) = f.i64s("input_ids");
        let to_u32 = |v: Vec<i64>| v.into_iter().map(|i| i as u32).collect::<Vec<u32>>();
        Self {
            ids: to_u32(ids),
            positions: f.i64s("position_ids").0,
            valid: f.i64s("attention_mask").0.iter().map(|&m| m == 1).collect(),
            targets: to_u32(f.i64s("targets").0),
            temperature: f.f32s("temperature").0,
            score: f.i64s("score_mask").0.iter().map(|&m| m as f32).collect(),
            visual: f.visual("image_grid_thw").expect("the case has an image"),
            batch: shape[0],
            seq: shape[1],
        }
    }

    fn input(&self) -> ForwardInput<'_> {
        ForwardInput {
            input_ids: &self.ids,
            batch: self.batch,
            positions: &self.positions,
            valid: Some(&self.valid),
            generated: None,
            images: Some(&self.visual),
            videos: None,
        }
    }

    /// Logits of the valid positions, flattened.
    fn logits<Bk: Backend>(&self, model: &Qwen25Vl<Bk>) -> Vec<f32> {
        let all = values(model.logits(model.forward_train(&self.input()).expect("forward")));
        self.valid_rows(&all, model.config.text.vocab_size)
    }

    fn valid_rows(&self, all: &[f32], vocab: usize) -> Vec<f32> {
        (0..self.batch * self.seq)
            .filter(|&i| self.valid[i])
            .flat_map(|i| all[i * vocab..(i + 1) * vocab].iter().copied())
            .collect()
    }
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

fn base<Bk: Backend>() -> Qwen25Vl<Bk> {
    Qwen25Vl::from_pretrained(model_dir("tiny_flat"), &Default::default()).expect("tiny model")
}

fn peft_model<Bk: Backend>() -> Qwen25Vl<Bk> {
    base::<Bk>()
        .load_lora(lora_dir("tiny_flat_peft"))
        .expect("the PEFT adapter loads")
}

#[test]
fn a_peft_adapter_gives_pefts_logits_on_both_towers() {
    let b = Batch::load();
    let model = peft_model::<B>();
    let sites = model.lora_sites();
    assert_eq!(sites.len(), 2 * 7 + 3 * 5, "every adapted projection");
    assert!(sites.iter().any(|s| s.tower == Tower::Vision));
    let theirs = b.valid_rows(&expected().f32s("logits").0, 672);
    let ours = b.logits(&model);
    let diff = max_abs_diff(&ours, &theirs);
    let without = max_abs_diff(&b.logits(&base::<B>()), &theirs);
    eprintln!(
        "PARITY lora logits vs PEFT: max abs diff {diff:e} (base without adapters: {without:e})"
    );
    assert!(diff < 1e-4, "{diff}");
    assert!(
        without > 1e-2,
        "the adapter must change the logits ({without})"
    );
}

#[test]
fn lora_gradients_match_peft_autograd() {
    let b = Batch::load();
    let device = Default::default();
    let model = peft_model::<AB>();
    let hidden = model.forward_train(&b.input()).expect("forward");
    let targets = Targets {
        temperature: Some(&b.temperature),
        ..Targets::new(&b.targets)
    };
    let logprobs = model
        .target_logprobs(hidden, &targets)
        .expect("scores")
        .logprobs;
    let mask =
        Tensor::<AB, 2>::from_data(TensorData::new(b.score.clone(), [b.batch, b.seq]), &device);
    let loss = (logprobs * mask).sum();
    let f = expected();
    let (want, got) = (f.f32s("loss").0[0], values(loss.clone())[0]);
    assert!((got - want).abs() < 1e-3, "loss {got} vs PEFT {want}");
    let grads = loss.backward();
    let cases = [
        (
            "model.language_model.layers.0.self_attn.q_proj.lora_A",
            false,
        ),
        (
            "model.language_model.layers.1.self_attn.o_proj.lora_A",
            false,
        ),
        ("model.language_model.layers.1.mlp.down_proj.lora_B", true),
        ("model.visual.blocks.0.attn.qkv.lora_B", true),
        ("model.visual.blocks.2.mlp.up_proj.lora_A", false),
    ];
    for (name, is_b) in cases {
        let path = name.rsplit_once('.').expect("a dotted name").0;
        let site = LoraSite::parse(path).expect("a site");
        let adapter = model.lora_adapter(site).expect("an adapter there");
        let param = if is_b {
            &adapter.lora_b
        } else {
            &adapter.lora_a
        };
        let ours = grad_torch_layout(param, &grads);
        let theirs = f.f32s(&format!("grad.{name}.weight")).0;
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!("PARITY lora grad {name}: max abs diff {diff:e} (largest |torch| {scale:e})");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{name}: {diff} (scale {scale})"
        );
    }
    // The base is frozen: no gradient reaches it.
    let layer = &model.model.text.layers[0];
    assert!(layer.self_attn.q_proj.weight.grad(&grads).is_none());
    assert!(model.model.text.embed_tokens.weight.grad(&grads).is_none());
}

/// burn stores A `[d_in, r]` and B `[r, d_out]`; PEFT's `[r, d_in]` and `[d_out, r]` are their transposes.
fn grad_torch_layout(
    param: &Param<Tensor<AB, 2>>,
    grads: &<AB as AutodiffBackend>::Gradients,
) -> Vec<f32> {
    values(param.grad(grads).expect("a gradient").transpose())
}

#[test]
fn merging_gives_the_adapted_logits_and_pefts_merged_logits() {
    let b = Batch::load();
    let adapted = peft_model::<B>();
    let before = b.logits(&adapted);
    let params = adapted.num_params() - adapted.lora_num_params();
    let merged = adapted.merge_lora();
    assert!(merged.lora_sites().is_empty());
    assert_eq!(
        merged.num_params(),
        params,
        "merging leaves the base's parameters"
    );
    let after = b.logits(&merged);
    let f = expected();
    let peft_merged = b.valid_rows(&f.f32s("merged_logits").0, 672);
    let (d_ours, d_peft) = (
        max_abs_diff(&after, &before),
        max_abs_diff(&after, &peft_merged),
    );
    eprintln!("PARITY lora merged vs adapted {d_ours:e}, vs PEFT merged {d_peft:e}");
    assert!(d_ours < 1e-4 && d_peft < 1e-4, "{d_ours} {d_peft}");
}

#[test]
fn a_saved_adapter_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model = peft_model::<B>();
    model.save_lora(dir.path()).expect("save");
    let back = base::<B>().load_lora(dir.path()).expect("reload");
    assert_eq!(back.lora_sites(), model.lora_sites());
    for site in model.lora_sites() {
        let (a, b) = (
            model.lora_adapter(site).unwrap(),
            back.lora_adapter(site).unwrap(),
        );
        assert_eq!(values(a.lora_a.val()), values(b.lora_a.val()), "{site:?}");
        assert_eq!(values(a.lora_b.val()), values(b.lora_b.val()), "{site:?}");
        assert_eq!(a.scaling, b.scaling);
        assert_eq!(b.lora_a.val().dtype(), DType::F32);
    }
    let batch = Batch::load();
    assert_eq!(batch.logits(&model), batch.logits(&back));
}

/// Our save of the PEFT fixture is byte-identical to the committed `tiny_flat_ours`, which PEFT loaded
/// (every tensor equal to its own) and ran: its logits there equal ours.
#[test]
fn our_saved_adapter_is_the_committed_folder_and_peft_reads_it() {
    let committed = lora_dir("tiny_flat_ours");
    let model = peft_model::<B>();
    if std::env::var_os("PIXEL_VLM_WRITE_LORA_FIXTURE").is_some() {
        model.save_lora(&committed).expect("write the fixture");
        return; // the script now runs PEFT on it and writes expected_peft.safetensors
    }
    let dir = tempfile::tempdir().unwrap();
    model.save_lora(dir.path()).expect("save");
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        let ours = std::fs::read(dir.path().join(file)).unwrap();
        let fixture = std::fs::read(committed.join(file)).unwrap();
        assert!(ours == fixture, "{file} differs from the committed folder");
    }
    let b = Batch::load();
    let peft = b.valid_rows(
        &Fixture::from_path(&committed.join("expected_peft.safetensors"))
            .f32s("logits")
            .0,
        672,
    );
    let diff = max_abs_diff(&b.logits(&model), &peft);
    eprintln!("PARITY lora: PEFT running our saved adapter vs us: max abs diff {diff:e}");
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn a_fresh_adapter_changes_nothing_and_one_adamw_step_moves_only_the_adapters() {
    let b = Batch::load();
    let config = LoraConfig::new()
        .with_rank(2)
        .with_alpha(4.0)
        .with_vision(true)
        .with_seed(3);
    let model = base::<AB>().with_lora(&config).expect("lora");
    assert_eq!(
        b.logits(&model.valid()),
        b.logits(&base::<B>()),
        "B starts at zero"
    );
    let hidden = model.forward_train(&b.input()).expect("forward");
    let loss = model
        .target_logprobs(hidden, &Targets::new(&b.targets))
        .expect("scores")
        .logprobs
        .mean()
        .neg();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    // Only the adapters' A and B (29 sites) are trainable.
    assert_eq!(grads.len(), 2 * 29);
    let mut optim = AdamWConfig::new().init::<AB, Qwen25Vl<AB>>();
    let stepped = optim.step(1e-2, model.clone(), grads);
    let site = LoraSite {
        tower: Tower::Text,
        layer: 1,
        target: LoraTarget::VProj,
    };
    let moved = |m: &Qwen25Vl<AB>| values(m.lora_adapter(site).unwrap().lora_b.val());
    assert_ne!(moved(&stepped), moved(&model), "B moved");
    let w = |m: &Qwen25Vl<AB>| values(m.model.text.layers[1].self_attn.v_proj.weight.val());
    assert_eq!(w(&stepped), w(&model), "the base did not");
}

#[test]
fn a_bf16_base_keeps_f32_adapters_and_their_gradients() {
    let device = Default::default();
    let model = Qwen25Vl::<AB>::from_pretrained_with_dtype(
        model_dir("tiny_flat"),
        &device,
        FloatDType::BF16,
    )
    .expect("bf16 model")
    .load_lora(lora_dir("tiny_flat_peft"))
    .expect("adapter");
    assert_eq!(model.dtype(), DType::BF16);
    let site = model.lora_sites()[0];
    let adapter = model.lora_adapter(site).unwrap();
    assert_eq!(adapter.lora_a.val().dtype(), DType::F32);
    let b = Batch::load();
    let hidden = model.forward_train(&b.input()).expect("forward");
    assert_eq!(hidden.dtype(), DType::BF16);
    let grads = model
        .target_logprobs(hidden, &Targets::new(&b.targets))
        .expect("scores")
        .logprobs
        .sum()
        .backward();
    let g = adapter.lora_b.grad(&grads).expect("a gradient");
    assert_eq!(g.dtype(), DType::F32);
    assert!(values(g).iter().any(|v| *v != 0.0));
    // Against PEFT's f32 logits, our bf16 error is of the size of PEFT's own with a bf16 base.
    let f = expected();
    let ours = b.logits(&model.valid());
    let f32_ref = b.valid_rows(&f.f32s("logits").0, 672);
    let peft_bf16 = b.valid_rows(&f.f32s("bf16_logits").0, 672);
    let (e_ours, e_peft) = (
        max_abs_diff(&ours, &f32_ref),
        max_abs_diff(&peft_bf16, &f32_ref),
    );
    eprintln!(
        "PARITY lora bf16 base: ours vs PEFT f32 {e_ours:e}, PEFT bf16 vs PEFT f32 {e_peft:e}, ours vs PEFT bf16 {:e}",
        max_abs_diff(&ours, &peft_bf16)
    );
    assert!(e_ours <= 2.0 * e_peft, "{e_ours} vs PEFT's own {e_peft}");
}

/// A copy of the PEFT fixture folder with `edit` applied to its config and tensors.
fn edited(
    edit_config: impl FnOnce(&mut serde_json::Value),
    edit_tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> tempfile::TempDir {
    let src = lora_dir("tiny_flat_peft");
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("adapter_config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (name, view.shape().to_vec(), v.collect())
        })
        .collect();
    edit_tensors(&mut tensors);
    write_tensors(&dir.path().join("adapter_model.safetensors"), &tensors);
    dir
}

fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|((name, shape, _), b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b);
        (name.clone(), view.unwrap())
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn adapter_error(dir: &Path) -> String {
    match base::<B>().load_lora(dir) {
        Err(VlmError::Adapter { reason, .. }) => reason,
        Err(other) => panic!("expected an adapter error, got {other}"),
        Ok(_) => panic!("a malformed adapter loaded"),
    }
}

#[test]
fn malformed_adapters_are_typed_errors_that_say_what_is_wrong() {
    let q = "base_model.model.model.language_model.layers.0.self_attn.q_proj";
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (edited(|c| c["use_dora"] = true.into(), |_| {}), "use_dora"),
        (
            edited(|c| c["r"] = 0.into(), |_| {}),
            "r must be a positive integer",
        ),
        (edited(|c| c["r"] = 8.into(), |_| {}), "expected shape [8,"),
        (
            edited(|c| c["peft_type"] = "IA3".into(), |_| {}),
            "peft_type",
        ),
        (
            edited(
                |c| c["rank_pattern"] = serde_json::json!({"q_proj": 8}),
                |_| {},
            ),
            "rank_pattern",
        ),
        (edited(|c| c["bias"] = "all".into(), |_| {}), "bias"),
        (
            edited(
                |c| c["modules_to_save"] = serde_json::json!(["lm_head"]),
                |_| {},
            ),
            "modules_to_save",
        ),
        (
            edited(
                |_| {},
                |t| t.retain(|(n, _, _)| n != &format!("{q}.lora_B.weight")),
            ),
            "lora_B is missing",
        ),
        (
            edited(|_| {}, |t| t[0].1 = vec![t[0].2.len()]),
            "expected shape",
        ),
        (
            edited(
                |_| {},
                |t| {
                    t.push((
                        "base_model.model.model.layers.9.mlp.up_proj.lora_A.weight".to_string(),
                        vec![4, 48],
                        vec![0.0; 192],
                    ))
                },
            ),
            "no layer 9",
        ),
        (
            edited(
                |_| {},
                |t| {
                    t.push((
                        "base_model.model.lm_head.lora_A.weight".into(),
                        vec![4, 48],
                        vec![0.0; 192],
                    ))
                },
            ),
            "lm_head",
        ),
        (
            // The same module in the original layout beside the transformers-5 one.
            edited(
                |_| {},
                |t| {
                    let dup = t
                        .iter()
                        .find(|(n, _, _)| n == &format!("{q}.lora_A.weight"))
                        .unwrap()
                        .clone();
                    t.push((
                        dup.0.replace("model.language_model.", "model."),
                        dup.1,
                        dup.2,
                    ));
                },
            ),
            "a second tensor",
        ),
        (edited(|_| {}, |t| t.clear()), "no lora_A/lora_B tensors"),
    ];
    for (dir, want) in &cases {
        let reason = adapter_error(dir.path());
        assert!(reason.contains(want), "expected `{want}` in: {reason}");
    }

    // Broken files.
    let dir = edited(|_| {}, |_| {});
    std::fs::write(dir.path().join("adapter_config.json"), "{not json").unwrap();
    assert!(adapter_error(dir.path()).contains("not valid JSON"));
    let dir = edited(|_| {}, |_| {});
    let weights = dir.path().join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(adapter_error(dir.path()).contains("not a safetensors file"));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        base::<B>().load_lora(dir.path()),
        Err(VlmError::Io { .. })
    ));

    // A second adapter on an adapted model, and saving without adapters.
    let adapted = peft_model::<B>();
    assert!(matches!(
        adapted.load_lora(lora_dir("tiny_flat_peft")),
        Err(VlmError::Adapter { .. })
    ));
    assert!(matches!(
        base::<B>().save_lora(dir.path()),
        Err(VlmError::Save(_))
    ));
}

#[test]
fn adapters_in_the_original_key_layout_load_as_well() {
    let dir = edited(
        |_| {},
        |t| {
            for (name, _, _) in t.iter_mut() {
                *name = name
                    .replace(
                        "base_model.model.model.language_model.",
                        "base_model.model.model.",
                    )
                    .replace("base_model.model.model.visual.", "base_model.model.visual.");
            }
        },
    );
    let model = base::<B>().load_lora(dir.path()).expect("original layout");
    let reference = peft_model::<B>();
    let b = Batch::load();
    assert_eq!(b.logits(&model), b.logits(&reference));
}
