//! Decoding sampled frames from a video file with FFmpeg (`ffmpeg-next`).
//!
//! The file is demuxed once (packets only, no decoding) to learn the exact frame count, the
//! presentation order and where the keyframes are. [`FrameSampling::plan`] then says which frames
//! qwen-vl-utils would read, and only the groups of pictures (keyframe to next keyframe) holding a
//! wanted frame are decoded, each only as far as its last wanted frame, with FFmpeg frame threading;
//! non-reference frames (most B-frames) are skipped unless wanted (`AVDISCARD_NONREF`), which
//! leaves every other frame bit-identical since nothing refers to them.
//! Only kept frames are converted to RGB (swscale, bilinear flags as PyAV's default).
//!
//! Frame `i` means the `i`-th frame in presentation order, as decode-all readers (PyAV, decord,
//! torchcodec) count. The fast path needs every packet to carry a unique timestamp and closed
//! groups of pictures (no frame shown before its group's keyframe); otherwise, or when the fast path
//! misses a frame, every frame is decoded in order ([`DecodeStrategy::DecodeAll`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use ff::Discard;
use ff::format::Pixel;
use ff::software::scaling;
use ffmpeg_next as ff;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::sampling::{FrameCount, FrameSampling};
use super::{Video, VideoInfo, VideoSource};
use crate::{Error, Result};

/// How to find the wanted frames in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DecodeStrategy {
    /// Decode only the groups of pictures that hold wanted frames (falls back to
    /// [`DecodeStrategy::DecodeAll`] where the file does not allow it). The default.
    #[default]
    SkipToKeyframes,
    /// Decode every frame in order up to the last wanted one (the reference behaviour).
    DecodeAll,
}

/// Options for [`Video::from_file`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeOptions {
    /// How many frames to sample (default: the official 16).
    pub count: FrameCount,
    /// How to reach them.
    pub strategy: DecodeStrategy,
    /// Decoder threads (frame threading); 0 lets FFmpeg pick one per core.
    pub threads: usize,
    /// Largest accepted `width * height` of a frame (default 178,956,970, the image limit).
    pub max_frame_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            count: FrameCount::official(),
            strategy: DecodeStrategy::default(),
            threads: 0,
            max_frame_pixels: crate::load::DecodeLimits::default().max_pixels,
        }
    }
}

fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| ff::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| Error::VideoDecode {
            what: "<ffmpeg init>".to_owned(),
            reason,
        })
}

/// The demuxed video stream: packets in decode order plus what the sampler needs.
struct Demuxed {
    decoder: ff::decoder::Video,
    packets: Vec<ff::Packet>,
    fps: f64,
}

fn open(path: &Path, threads: usize, max_frame_pixels: u64) -> Result<Demuxed> {
    init()?;
    let what = path.display().to_string();
    let err = |stage: &str, e: ff::Error| Error::VideoDecode {
        what: what.clone(),
        reason: format!("{stage}: {e}"),
    };
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() == 0 {
        return Err(Error::VideoDecode {
            what,
            reason: "the file is empty (0 bytes)".to_owned(),
        });
    }
    let mut input = ff::format::input(path).map_err(|e| err("open", e))?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| Error::NoVideoStream { what: what.clone() })?;
    let index = stream.index();
    let declared_frames = stream.frames();
    let fps = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .map_or(0.0, f64::from);
    let mut context = ff::codec::Context::from_parameters(stream.parameters())
        .map_err(|e| err("codec parameters", e))?;
    context.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    let decoder = context
        .decoder()
        .video()
        .map_err(|e| err("open decoder", e))?;
    let (width, height) = (decoder.width(), decoder.height());
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_frame_pixels {
        return Err(Error::ImageTooLarge {
            what,
            width,
            height,
            pixels,
            max_width: u32::MAX,
            max_height: u32::MAX,
            max_pixels: max_frame_pixels,
        });
    }
    let packets: Vec<ff::Packet> = input
        .packets()
        .filter(|(s, p)| s.index() == index && p.size() > 0)
        .map(|(_, p)| p)
        .collect();
    if packets.is_empty() {
        return Err(Error::EmptyVideo { what });
    }
    // A container index that promises more frames than could be read means a truncated file.
    if let Ok(listed) = usize::try_from(declared_frames)
        && listed > packets.len()
    {
        return Err(Error::VideoDecode {
            what,
            reason: format!(
                "truncated: the container lists {listed} frames but only {} could be read",
                packets.len()
            ),
        });
    }
    Ok(Demuxed {
        decoder,
        packets,
        fps,
    })
}

/// Frames (packets) in the file's video stream and its frame rate, without decoding.
///
/// # Errors
/// As [`Video::from_file`].
pub fn probe_frame_count(path: impl AsRef<Path>) -> Result<(u64, f64)> {
    let d = open(path.as_ref(), 1, u64::MAX)?;
    Ok((d.packets.len() as u64, d.fps))
}

pub(super) fn decode_file(path: &Path, options: &DecodeOptions) -> Result<Video> {
    let what = path.display().to_string();
    let Demuxed {
        mut decoder,
        packets,
        fps,
    } = open(path, options.threads, options.max_frame_pixels)?;
    let plan = FrameSampling::plan(options.count, packets.len() as u64, fps)?;
    let mut out = Output::new(&plan.indices);
    if options.strategy == DecodeStrategy::SkipToKeyframes
        && let Some(gops) = Gops::new(&packets)
    {
        skip_to_keyframes(&mut decoder, &packets, &gops, &plan.indices, &mut out);
    }
    if !out.done() {
        decoder.flush();
        decode_all(&mut decoder, &packets, &mut out);
    }
    let decoded = out.decoded;
    let frames = out.finish().map_err(|index| Error::VideoDecode {
        what: what.clone(),
        reason: format!("frame {index} of {} could not be decoded", packets.len()),
    })?;
    let info = VideoInfo {
        source: VideoSource::File(path.to_path_buf()),
        total_frames: plan.total_frames,
        video_fps: plan.video_fps,
        frame_indices: plan.indices.clone(),
        sample_fps: plan.sample_fps,
        padded: 0,
        frames_decoded: decoded,
    };
    Video::with_info(frames, info, &what)
}

/// Output slots: wanted frame index → the positions it fills (an index can repeat).
struct Output {
    slots: Vec<Option<RgbImage>>,
    by_index: HashMap<u64, Vec<usize>>,
    missing: usize,
    decoded: u64,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    rgb: ff::frame::Video,
}

impl Output {
    fn new(indices: &[u64]) -> Self {
        let mut by_index: HashMap<u64, Vec<usize>> = HashMap::new();
        for (slot, &i) in indices.iter().enumerate() {
            by_index.entry(i).or_default().push(slot);
        }
        Self {
            slots: vec![None; indices.len()],
            by_index,
            missing: indices.len(),
            decoded: 0,
            scaler: None,
            rgb: ff::frame::Video::empty(),
        }
    }

    fn done(&self) -> bool {
        self.missing == 0
    }

    fn wants(&self, index: u64) -> bool {
        self.by_index
            .get(&index)
            .is_some_and(|s| s.iter().any(|&k| self.slots[k].is_none()))
    }

    /// Converts `frame` to RGB and stores it as frame `index` (if wanted and not yet stored).
    fn store(&mut self, index: u64, frame: &ff::frame::Video) {
        if !self.wants(index) {
            return;
        }
        let Some(image) = self.convert(frame) else {
            return;
        };
        for &k in &self.by_index[&index] {
            if self.slots[k].is_none() {
                self.slots[k] = Some(image.clone());
                self.missing -= 1;
            }
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

    /// The frames, or the first wanted index that was never decoded.
    fn finish(self) -> std::result::Result<Vec<RgbImage>, u64> {
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

/// Groups of pictures: where each starts in decode order, and each packet's presentation index.
struct Gops {
    /// Decode-order position of each group's first packet (a keyframe, or packet 0).
    starts: Vec<usize>,
    /// Presentation index of each packet, by decode-order position.
    shown: Vec<u64>,
}

impl Gops {
    /// `None` when the fast path cannot be trusted: a packet without a timestamp, two packets with
    /// one timestamp, or a frame shown before its group's keyframe (open GOP).
    fn new(packets: &[ff::Packet]) -> Option<Self> {
        let pts: Vec<i64> = packets.iter().map(ff::Packet::pts).collect::<Option<_>>()?;
        let mut order: Vec<usize> = (0..pts.len()).collect();
        order.sort_by_key(|&i| pts[i]);
        if order.windows(2).any(|w| pts[w[0]] == pts[w[1]]) {
            return None;
        }
        let mut shown = vec![0u64; pts.len()];
        for (rank, &i) in order.iter().enumerate() {
            shown[i] = rank as u64;
        }
        let mut starts = vec![0];
        starts.extend((1..packets.len()).filter(|&i| packets[i].is_key()));
        // Closed groups: every frame of group g is shown at or after g's keyframe and before the
        // next group's keyframe.
        for (g, &s) in starts.iter().enumerate() {
            let end = starts.get(g + 1).copied().unwrap_or(packets.len());
            let next_first = starts.get(g + 1).map_or(u64::MAX, |&n| shown[n]);
            if shown[s..end]
                .iter()
                .any(|&r| r < shown[s] || r >= next_first)
            {
                return None;
            }
        }
        Some(Self { starts, shown })
    }

    fn group_of(&self, position: usize) -> usize {
        self.starts.partition_point(|&s| s <= position) - 1
    }
}

/// Receives every frame the decoder has ready and stores the wanted ones; `index_of` maps a
/// frame to its presentation index.
fn receive(
    decoder: &mut ff::decoder::Video,
    out: &mut Output,
    frame: &mut ff::frame::Video,
    mut index_of: impl FnMut(&ff::frame::Video) -> Option<u64>,
) {
    while decoder.receive_frame(frame).is_ok() {
        out.decoded += 1;
        if let Some(i) = index_of(frame) {
            out.store(i, frame);
        }
    }
}

fn send(
    decoder: &mut ff::decoder::Video,
    packet: &ff::Packet,
    out: &mut Output,
    frame: &mut ff::frame::Video,
    index_of: &mut impl FnMut(&ff::frame::Video) -> Option<u64>,
) {
    // Decode errors on one packet are skipped, as the ffmpeg CLI does; a frame that never comes
    // out is reported at the end.
    if let Err(ff::Error::Other {
        errno: ff::error::EAGAIN,
    }) = decoder.send_packet(packet)
    {
        receive(decoder, out, frame, &mut *index_of);
        let _ = decoder.send_packet(packet);
    }
    receive(decoder, out, frame, &mut *index_of);
}

fn drain(
    decoder: &mut ff::decoder::Video,
    out: &mut Output,
    frame: &mut ff::frame::Video,
    index_of: &mut impl FnMut(&ff::frame::Video) -> Option<u64>,
) {
    if decoder.send_eof().is_ok() {
        receive(decoder, out, frame, &mut *index_of);
    }
    decoder.flush();
}

fn skip_to_keyframes(
    decoder: &mut ff::decoder::Video,
    packets: &[ff::Packet],
    gops: &Gops,
    indices: &[u64],
    out: &mut Output,
) {
    // Presentation index → decode position, and which groups hold wanted frames.
    let mut position_of = vec![0usize; packets.len()];
    for (p, &r) in gops.shown.iter().enumerate() {
        position_of[r as usize] = p;
    }
    let mut wanted_in_group = vec![0usize; gops.starts.len()];
    let mut seen = std::collections::HashSet::new();
    for &i in indices {
        if let Some(&p) = position_of.get(i as usize)
            && seen.insert(i)
        {
            wanted_in_group[gops.group_of(p)] += 1;
        }
    }
    let pts_to_index: HashMap<i64, u64> = packets
        .iter()
        .zip(&gops.shown)
        .filter_map(|(p, &r)| Some((p.pts()?, r)))
        .collect();
    let mut index_of = |f: &ff::frame::Video| {
        f.pts()
            .or_else(|| f.timestamp())
            .and_then(|t| pts_to_index.get(&t).copied())
    };
    let mut frame = ff::frame::Video::empty();
    // Decode position right after the last packet fed, while the decoder holds state.
    let mut next_fed: Option<usize> = None;
    let mut current = Discard::Default;
    for (g, &start) in gops.starts.iter().enumerate() {
        if wanted_in_group[g] == 0 {
            continue;
        }
        if next_fed.is_some_and(|n| n != start) {
            drain(decoder, out, &mut frame, &mut index_of);
        }
        let end = gops.starts.get(g + 1).copied().unwrap_or(packets.len());
        let group_done = |out: &Output| (start..end).all(|p| !out.wants(gops.shown[p]));
        for (p, packet) in packets.iter().enumerate().take(end).skip(start) {
            // Frames no other frame refers to (most B-frames) are only decoded when wanted.
            let discard = if out.wants(gops.shown[p]) {
                Discard::Default
            } else {
                Discard::NonReference
            };
            if discard != current {
                decoder.skip_frame(discard);
                current = discard;
            }
            send(decoder, packet, out, &mut frame, &mut index_of);
            next_fed = Some(p + 1);
            if group_done(out) {
                break;
            }
        }
        if out.done() {
            break;
        }
    }
    if next_fed.is_some() {
        drain(decoder, out, &mut frame, &mut index_of);
    }
    decoder.skip_frame(Discard::Default);
}

fn decode_all(decoder: &mut ff::decoder::Video, packets: &[ff::Packet], out: &mut Output) {
    let mut frame = ff::frame::Video::empty();
    let mut next = 0u64;
    let mut index_of = |_: &ff::frame::Video| {
        let i = next;
        next += 1;
        Some(i)
    };
    for packet in packets {
        send(decoder, packet, out, &mut frame, &mut index_of);
        if out.done() {
            break;
        }
    }
    drain(decoder, out, &mut frame, &mut index_of);
}
