//! The decoders' output: the kept frames, converted to RGB, under the limits every decoder of one
//! file shares (the frame size and the byte budget of the kept frames), and a tally of what each
//! decoder did.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ff::format::Pixel;
use ff::software::scaling;
use ffmpeg_next as ff;
use image::RgbImage;

use super::DecodeOptions;
use crate::video::rgb_bytes;
use crate::{Error, Result};

/// The limits every decoder of one file shares: the frame size, the byte budget of the kept frames
/// and the first limit broken, which stops them all.
pub(super) struct FrameLimits {
    what: String,
    pub(super) max_frame_pixels: u64,
    max_total_bytes: u64,
    /// Bytes of the kept frames so far (reserved before each conversion).
    used: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl FrameLimits {
    pub(super) fn new(what: &str, options: &DecodeOptions) -> Self {
        Self {
            what: what.to_owned(),
            max_frame_pixels: options.max_frame_pixels,
            max_total_bytes: options.max_total_bytes,
            used: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// Checks decoded frame `index` of `width x height`, to be kept `copies` times, against the
    /// limits and reserves its bytes in the budget; returns the bytes reserved.
    fn admit(&self, index: u64, width: u32, height: u32, copies: usize) -> Result<u64> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_frame_pixels {
            return Err(Error::ImageTooLarge {
                what: format!("{} (frame {index})", self.what),
                width,
                height,
                pixels,
                max_width: u32::MAX,
                max_height: u32::MAX,
                max_pixels: self.max_frame_pixels,
            });
        }
        let frame_bytes = rgb_bytes(width, height).saturating_mul(copies as u64);
        let max = self.max_total_bytes;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_add(frame_bytes)).filter(|&t| t <= max)
            })
            .map(|_| frame_bytes)
            .map_err(|used| Error::FrameBudgetExceeded {
                what: self.what.clone(),
                index,
                frame_bytes,
                total_bytes: used.saturating_add(frame_bytes),
                max_total_bytes: max,
            })
    }

    /// Gives back bytes reserved for a frame that was not kept after all.
    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Records `error` (the first one wins) and stops every decoder.
    fn fail(&self, error: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(error);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub(super) fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// What a decoder did: frames it produced, and packets or frames it failed on (skipped, as the
/// ffmpeg CLI does; a wanted frame that never comes out is reported with these facts).
#[derive(Default)]
pub(super) struct Tally {
    pub(super) decoded: u64,
    errors: u64,
    last_error: Option<String>,
}

impl Tally {
    pub(super) fn error(&mut self, e: &ff::Error) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
    }

    fn add(&mut self, other: Tally) {
        self.decoded += other.decoded;
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }

    /// ` (the decoder failed N times, last: ...)`, or nothing when it never failed.
    pub(super) fn describe(&self) -> String {
        match &self.last_error {
            Some(e) => format!(" (the decoder failed {} times, last: {e})", self.errors),
            None => String::new(),
        }
    }
}

/// Output slots: wanted frame index → the positions it fills (an index can repeat).
pub(super) struct Output<'a> {
    pub(super) slots: Vec<Option<RgbImage>>,
    by_index: HashMap<u64, Vec<usize>>,
    missing: usize,
    pub(super) tally: Tally,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    rgb: ff::frame::Video,
    pub(super) limits: &'a FrameLimits,
}

impl<'a> Output<'a> {
    pub(super) fn new(indices: &[u64], limits: &'a FrameLimits) -> Self {
        let mut by_index: HashMap<u64, Vec<usize>> = HashMap::new();
        for (slot, &i) in indices.iter().enumerate() {
            by_index.entry(i).or_default().push(slot);
        }
        Self {
            slots: vec![None; indices.len()],
            by_index,
            missing: indices.len(),
            tally: Tally::default(),
            scaler: None,
            rgb: ff::frame::Video::empty(),
            limits,
        }
    }

    /// Every wanted frame is stored, or a limit was broken (nothing more is wanted then).
    pub(super) fn done(&self) -> bool {
        self.missing == 0 || self.limits.failed()
    }

    pub(super) fn wants(&self, index: u64) -> bool {
        !self.limits.failed()
            && self
                .by_index
                .get(&index)
                .is_some_and(|s| s.iter().any(|&k| self.slots[k].is_none()))
    }

    /// Checks `frame` against the limits, converts it to RGB and stores it as frame `index` (if
    /// wanted and not yet stored). A broken limit is recorded in the shared limits, which stops
    /// every decoder.
    pub(super) fn store(&mut self, index: u64, frame: &ff::frame::Video) {
        if !self.wants(index) {
            return;
        }
        let empty: Vec<usize> = self.by_index[&index]
            .iter()
            .copied()
            .filter(|&k| self.slots[k].is_none())
            .collect();
        let reserved = match self
            .limits
            .admit(index, frame.width(), frame.height(), empty.len())
        {
            Ok(bytes) => bytes,
            Err(e) => return self.limits.fail(e),
        };
        let Some(image) = self.convert(frame) else {
            return self.limits.release(reserved);
        };
        if let Some((&last, rest)) = empty.split_last() {
            for &k in rest {
                self.slots[k] = Some(image.clone());
            }
            self.slots[last] = Some(image);
            self.missing -= empty.len();
        }
    }

    fn convert(&mut self, frame: &ff::frame::Video) -> Option<RgbImage> {
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        if w == 0 || h == 0 || fmt == Pixel::None {
            return None;
        }
        if self
            .scaler
            .as_ref()
            .is_none_or(|(_, f, sw, sh)| (*f, *sw, *sh) != (fmt, w, h))
        {
            let ctx =
                scaling::Context::get(fmt, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                    .ok()?;
            self.scaler = Some((ctx, fmt, w, h));
        }
        let (scaler, ..) = self.scaler.as_mut()?;
        scaler.run(frame, &mut self.rgb).ok()?;
        let stride = self.rgb.stride(0);
        let data = self.rgb.data(0);
        let row = w as usize * 3;
        let mut buf = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            buf.extend_from_slice(data.get(y * stride..y * stride + row)?);
        }
        RgbImage::from_raw(w, h, buf)
    }

    /// Takes the frames another decoder filled in (`slots` as in [`Output::new`] for the same
    /// indices) and adds its tally.
    pub(super) fn absorb(&mut self, slots: Vec<Option<RgbImage>>, tally: Tally) {
        for (mine, theirs) in self.slots.iter_mut().zip(slots) {
            if mine.is_none() && theirs.is_some() {
                *mine = theirs;
                self.missing -= 1;
            }
        }
        self.tally.add(tally);
    }

    /// The frames, or the first wanted index that was never decoded.
    pub(super) fn finish(self) -> std::result::Result<Vec<RgbImage>, u64> {
        let missing = self
            .by_index
            .iter()
            .find(|(_, s)| s.iter().any(|&k| self.slots[k].is_none()))
            .map(|(&i, _)| i);
        match missing {
            Some(i) => Err(i),
            None => Ok(self.slots.into_iter().flatten().collect()),
        }
    }
}
