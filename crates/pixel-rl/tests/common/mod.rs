//! The committed tiny checkpoint as a complete folder, shared by the end-to-end tests.

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
pub fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

/// A text-only query answered in a few tokens: a short system prompt keeps rollouts fast (the tool block
/// is ~800 tokens with the test tokenizer).
#[allow(dead_code)]
pub fn short_rollout(max_new_tokens: usize) -> pixel_agent::RolloutConfig {
    pixel_agent::RolloutConfig {
        first_turn: pixel_vlm::sampling::SamplingParams::with_temperature(1.0).top_k(2),
        max_new_tokens,
        system: Some("You are a helpful assistant.".into()),
        ..pixel_agent::RolloutConfig::default()
    }
}

/// Text-only tasks `Pick one. (k)`.
#[allow(dead_code)]
pub fn text_tasks(n: usize) -> Vec<pixel_rl::data::Task> {
    (0..n)
        .map(|k| pixel_rl::data::Task {
            id: format!("t{k}"),
            query: pixel_agent::Query {
                media: pixel_agent::Media::Images(Vec::new()),
                question: format!("Pick one. ({k})"),
            },
            answers: vec!["x".into()],
            options: Vec::new(),
        })
        .collect()
}

/// Every float parameter of `module` as `path -> values` (f32), in module order.
#[allow(dead_code)]
pub fn params_by_path<Bk: burn::tensor::backend::Backend, M: burn::module::Module<Bk>>(
    module: &M,
) -> std::collections::BTreeMap<String, Vec<f32>> {
    struct Values {
        stack: Vec<String>,
        out: std::collections::BTreeMap<String, Vec<f32>>,
    }
    impl<Bk: burn::tensor::backend::Backend> burn::module::ModuleVisitor<Bk> for Values {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<Bk, D>>,
        ) {
            let v = param.val().into_data().convert::<f32>().to_vec::<f32>();
            self.out.insert(self.stack.join("."), v.expect("f32"));
        }
    }
    let mut v = Values {
        stack: Vec::new(),
        out: std::collections::BTreeMap::new(),
    };
    module.visit(&mut v);
    v.out
}

/// The largest `|a - b|` over the parameters both maps hold (they must hold the same paths and shapes).
#[allow(dead_code)]
pub fn max_param_diff(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
) -> f32 {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "parameter paths"
    );
    a.iter()
        .map(|(k, x)| {
            let y = &b[k];
            assert_eq!(x.len(), y.len(), "{k}");
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// Four SFT examples built from synthesized `needle` traces (clean, one wrong crop first,
/// coarse-to-fine, clean), with the paper's mask.
#[allow(dead_code)]
pub fn needle_examples(source: &std::path::Path) -> Vec<pixel_rl::sft::SftExample> {
    use pixel_traces::{SynthConfig, Synthesizer, SyntheticDataset, TemplateNarrator, Variant};
    let processor = pixel_vlm::processor::Processor::from_pretrained(source).expect("processor");
    let synth = Synthesizer::new(SynthConfig::default(), TemplateNarrator);
    let data = SyntheticDataset::by_name("needle").expect("needle");
    let mut traces = Vec::new();
    let mut images = std::collections::HashMap::new();
    let variants = [
        Variant::Clean,
        Variant::OneWrong,
        Variant::CoarseToFine,
        Variant::Clean,
    ];
    for (k, variant) in variants.into_iter().enumerate() {
        let sample = data.sample(k as u64, 0).expect("sample");
        let made = synth.synthesize_as(&sample, 0, variant).expect("trace");
        images.extend(made.images.iter().cloned());
        traces.push(made.trace);
    }
    let load = |name: &str| images.get(name).cloned().ok_or(format!("no image {name}"));
    let (ok, failed) = pixel_rl::trainer::sft::build_examples(
        &processor,
        &traces,
        pixel_rl::sft::MaskRule::Paper,
        &load,
    );
    assert!(failed.is_empty(), "{failed:?}");
    ok
}

/// Trains `trainer` to step `stop_after` and checkpoints there (a run that is interrupted), or to the end.
#[allow(dead_code)]
pub fn train_until<B: burn::tensor::backend::AutodiffBackend>(
    trainer: &mut pixel_rl::trainer::SftTrainer<B>,
    stop_after: Option<usize>,
) {
    match stop_after {
        Some(n) => {
            while trainer.step() < n {
                trainer.train_step().expect("step");
            }
            trainer.checkpoint().expect("checkpoint");
        }
        None => {
            trainer.train().expect("train");
        }
    }
}
