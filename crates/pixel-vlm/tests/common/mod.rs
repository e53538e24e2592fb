//! Fixture helpers shared by the model tests: the committed tiny checkpoints and the expected tensors that
//! `scripts/gen_vlm_model_fixtures.py` / `gen_vlm_bf16_fixtures.py` wrote beside them.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use burn::tensor::Tensor;
use pixel_vlm::generation::SegmentInput;
use pixel_vlm::{ForwardInput, KvCache, Qwen25Vl, VisualInput};
use safetensors::SafeTensors;

/// The backend the tests run on: CUDA with the `cuda` feature (see [`model_dir`] for its f32 products), else
/// the default CPU backend.
#[cfg(feature = "cuda")]
pub type B = pixel_vlm::backend::CudaBackend;

/// The backend the tests run on: CUDA with the `cuda` feature (see [`model_dir`] for its f32 products), else
/// the default CPU backend.
#[cfg(not(feature = "cuda"))]
pub type B = pixel_vlm::backend::CpuBackend;

/// Seed of the image patches and of the video patches in every fixture.
pub const IMAGE_SEED: i64 = 0;
pub const VIDEO_SEED: i64 = 1_000_003;

/// The crate's folder: `CARGO_MANIFEST_DIR` of the running process (cargo sets it when it runs a test; set
/// it to run a copied test binary elsewhere, as `scripts/device/cuda_parity.sh` does), else where the test
/// was compiled.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `tests/fixtures/models/<name>`.
///
/// Every model test starts here, so on CUDA this also sets f32 products to full f32
/// (`F32Matmul::Exact`) unless `PIXEL_VLM_F32_MATMUL` chooses (`tf32` measures the backend's own products).
pub fn model_dir(name: &str) -> PathBuf {
    #[cfg(feature = "cuda")]
    {
        use pixel_vlm::backend::{F32_MATMUL_ENV, F32Matmul, set_f32_matmul};
        if std::env::var_os(F32_MATMUL_ENV).is_none() {
            set_f32_matmul(F32Matmul::Exact);
        }
    }
    crate_dir().join("tests/fixtures/models").join(name)
}

/// The generators' deterministic patches: `((i*7919 + seed*13 + 17) % 509 - 254) / 256`.
pub fn pixel_values(n_patches: usize, seed: i64) -> Vec<f32> {
    (0..(n_patches * 1176) as i64)
        .map(|i| (((i * 7919 + seed * 13 + 17) % 509) - 254) as f32 / 256.0)
        .collect()
}

/// One `expected_<case>.safetensors` file.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    /// Reads `tests/fixtures/models/<model>/expected_<case>.safetensors`.
    pub fn load(model: &str, case: &str) -> Self {
        let path = model_dir(model).join(format!("expected_{case}.safetensors"));
        Self {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    /// Reads any safetensors file of expected values.
    pub fn from_path(path: &std::path::Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    /// Whether the file holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors().names().contains(&name)
    }

    /// An i64 tensor and its shape.
    pub fn i64s(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        let values = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (values, t.shape().to_vec())
    }

    /// An f32 tensor and its shape.
    pub fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        let values = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (values, t.shape().to_vec())
    }

    /// `input_ids` as token ids.
    pub fn input_ids(&self) -> Vec<u32> {
        self.i64s("input_ids").0.iter().map(|&i| i as u32).collect()
    }

    /// The `[t, h, w]` grids of `image_grid_thw` or `video_grid_thw`, if the case has them.
    pub fn grids(&self, name: &str) -> Option<Vec<[usize; 3]>> {
        self.has(name).then(|| {
            self.i64s(name)
                .0
                .chunks_exact(3)
                .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
                .collect()
        })
    }

    /// The images (`image_grid_thw`) or videos (`video_grid_thw`) of the case with their patches.
    pub fn visual(&self, grid_name: &str) -> Option<VisualInput> {
        let seed = if grid_name.starts_with("video") {
            VIDEO_SEED
        } else {
            IMAGE_SEED
        };
        self.grids(grid_name).map(|grid_thw| {
            let n = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
            VisualInput {
                pixel_values: pixel_values(n, seed),
                grid_thw,
            }
        })
    }

    /// The case's prompt as a segment with explicit positions and its images/videos.
    pub fn prompt(&self) -> SegmentInput {
        SegmentInput {
            input_ids: self.input_ids(),
            positions: Some(self.i64s("position_ids").0),
            images: self.visual("image_grid_thw"),
            videos: self.visual("video_grid_thw"),
        }
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tensor's values as f32 (converting half precision).
pub fn to_f32<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// A one-row forward over a fixture prompt (explicit positions, its images and videos).
pub fn prompt_input(prompt: &SegmentInput) -> ForwardInput<'_> {
    ForwardInput {
        input_ids: &prompt.input_ids,
        batch: 1,
        positions: prompt
            .positions
            .as_deref()
            .expect("fixture prompts carry positions"),
        valid: None,
        generated: None,
        images: prompt.images.as_ref(),
        videos: prompt.videos.as_ref(),
    }
}

/// Feeds one token to a one-row model at the row's next position; returns its logits `[1, 1, vocab]`.
pub fn step(model: &Qwen25Vl<B>, cache: &mut KvCache<B>, token: u32) -> Tensor<B, 3> {
    let pos = cache.next_position(0);
    let input = ForwardInput {
        input_ids: &[token],
        batch: 1,
        positions: &[pos, pos, pos],
        valid: None,
        generated: None,
        images: None,
        videos: None,
    };
    model.forward(&input, cache).unwrap()
}
