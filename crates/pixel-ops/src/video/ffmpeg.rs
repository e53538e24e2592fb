//! Decoding sampled frames from a video file with FFmpeg (`ffmpeg-next`).
//!
//! The file is demuxed once (packets only, no decoding, no packet data kept) to learn the exact
//! frame count, the presentation order and where the keyframes are. [`FrameSampling::plan`] then
//! says which frames qwen-vl-utils would read; a second demuxing pass keeps the packets of the groups
//! of pictures (keyframe to next keyframe) holding a wanted frame, and only those are decoded, each
//! only as far as its last wanted frame. Non-reference frames (most B-frames) are skipped unless
//! wanted (`AVDISCARD_NONREF`), which leaves every other frame bit-identical since nothing refers
//! to them. The groups are split across parallel decoders (or one decoder uses FFmpeg frame
//! threading, [`DecodeOptions::split_groups`]), and only kept frames are converted to RGB (swscale
//! with PyAV's default bilinear flags; equal to PyAV's `to_ndarray(format="rgb24")` on the
//! fixtures).
//!
//! Frame `i` means the `i`-th frame in presentation order, as decode-all readers (PyAV, decord,
//! torchcodec) count. The fast path needs every packet to carry a unique timestamp and closed
//! groups of pictures (no frame shown before its group's keyframe); otherwise, or when the fast path
//! misses a frame, every frame is decoded in order ([`DecodeStrategy::DecodeAll`]). Packets that
//! fail to decode are skipped as the `ffmpeg` CLI does; a wanted frame that never comes out is an
//! [`Error::VideoDecode`].

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
    /// Threads to decode with; 0 uses one per core. See [`DecodeOptions::split_groups`].
    pub threads: usize,
    /// With [`DecodeStrategy::SkipToKeyframes`] and more than one group of pictures to decode,
    /// split the groups across up to `threads` decoders running in parallel (default `true`);
    /// otherwise one decoder uses FFmpeg frame threading. Frames are the same either way.
    pub split_groups: bool,
    /// Largest accepted `width * height` of a frame (default 178,956,970, the image limit).
    pub max_frame_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            count: FrameCount::official(),
            strategy: DecodeStrategy::default(),
            threads: 0,
            split_groups: true,
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

/// What the first demuxing pass learns about one packet of the video stream.
struct PacketMeta {
    pts: Option<i64>,
    key: bool,
}

/// The video stream after the first demuxing pass: per-packet facts in decode order (no packet
/// data is kept) plus what the sampler needs.
struct Demuxed {
    /// An owned copy of the stream's codec parameters, to open more decoders from.
    parameters: ff::codec::Parameters,
    decoder: ff::decoder::Video,
    stream: usize,
    meta: Vec<PacketMeta>,
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
    let parameters = stream.parameters().clone();
    let decoder = open_decoder(&parameters, threads).map_err(|e| err("open decoder", e))?;
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
    let meta: Vec<PacketMeta> = input
        .packets()
        .filter(|(s, p)| s.index() == index && p.size() > 0)
        .map(|(_, p)| PacketMeta {
            pts: p.pts(),
            key: p.is_key(),
        })
        .collect();
    if meta.is_empty() {
        return Err(Error::EmptyVideo { what });
    }
    // A container index that promises more frames than could be read means a truncated file.
    if let Ok(listed) = usize::try_from(declared_frames)
        && listed > meta.len()
    {
        return Err(Error::VideoDecode {
            what,
            reason: format!(
                "truncated: the container lists {listed} frames but only {} could be read",
                meta.len()
            ),
        });
    }
    Ok(Demuxed {
        parameters,
        decoder,
        stream: index,
        meta,
        fps,
    })
}

/// A decoder for `parameters` with `threads` frame threads (0: FFmpeg picks).
fn open_decoder(
    parameters: &ff::codec::Parameters,
    threads: usize,
) -> std::result::Result<ff::decoder::Video, ff::Error> {
    let mut context = ff::codec::Context::from_parameters(parameters.clone())?;
    context.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    context.decoder().video()
}

/// Frames (packets) in the file's video stream and its frame rate, without decoding.
///
/// # Errors
/// As [`Video::from_file`].
pub fn probe_frame_count(path: impl AsRef<Path>) -> Result<(u64, f64)> {
    let d = open(path.as_ref(), 1, u64::MAX)?;
    Ok((d.meta.len() as u64, d.fps))
}

pub(super) fn decode_file(path: &Path, options: &DecodeOptions) -> Result<Video> {
    let what = path.display().to_string();
    let Demuxed {
        parameters,
        mut decoder,
        stream,
        meta,
        fps,
    } = open(path, options.threads, options.max_frame_pixels)?;
    let plan = FrameSampling::plan(options.count, meta.len() as u64, fps)?;
    let mut out = Output::new(&plan.indices);
    if options.strategy == DecodeStrategy::SkipToKeyframes
        && let Some(gops) = Gops::new(&meta)
    {
        let groups = wanted_groups(&gops, &plan.indices);
        // Second pass: keep the data of the packets in wanted groups only.
        let mut wanted = vec![false; gops.starts.len()];
        for &(g, _) in &groups {
            wanted[g] = true;
        }
        let packets = read_packets(path, stream, |p| wanted[gops.group_of(p)])?;
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let workers = threads.min(groups.len());
        let job = Job {
            packets: &packets,
            meta: &meta,
            gops: &gops,
            indices: &plan.indices,
        };
        if options.split_groups && workers >= 2 {
            decode_groups_in_parallel(
                &job,
                &parameters,
                &groups,
                workers,
                threads / workers,
                &mut out,
            );
        } else {
            let ids: Vec<usize> = groups.iter().map(|&(g, _)| g).collect();
            skip_to_keyframes(&mut decoder, &job, &ids, &mut out);
        }
    }
    if !out.done() {
        decoder.flush();
        decode_all(&mut decoder, path, stream, &mut out)?;
    }
    let decoded = out.decoded;
    let frames = out.finish().map_err(|index| Error::VideoDecode {
        what: what.clone(),
        reason: format!("frame {index} of {} could not be decoded", meta.len()),
    })?;
    let info = VideoInfo {
        source: VideoSource::File(path.to_path_buf()),
        total_frames: plan.total_frames,
        video_fps: plan.video_fps,
        frame_indices: plan.indices,
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

    /// Takes the frames another decoder filled in (`slots` as in [`Output::new`] for the same
    /// indices) and adds its count of decoded frames.
    fn absorb(&mut self, slots: Vec<Option<RgbImage>>, decoded: u64) {
        for (mine, theirs) in self.slots.iter_mut().zip(slots) {
            if mine.is_none() && theirs.is_some() {
                *mine = theirs;
                self.missing -= 1;
            }
        }
        self.decoded += decoded;
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
    fn new(packets: &[PacketMeta]) -> Option<Self> {
        let pts: Vec<i64> = packets.iter().map(|p| p.pts).collect::<Option<_>>()?;
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
        starts.extend((1..packets.len()).filter(|&i| packets[i].key));
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

/// The groups of pictures holding wanted frames, ascending, each with its cost: packets from its
/// keyframe to its last wanted frame.
fn wanted_groups(gops: &Gops, indices: &[u64]) -> Vec<(usize, usize)> {
    let mut position_of = vec![0usize; gops.shown.len()];
    for (p, &r) in gops.shown.iter().enumerate() {
        position_of[r as usize] = p;
    }
    let mut last_wanted: HashMap<usize, usize> = HashMap::new();
    for &i in indices {
        if let Some(&p) = position_of.get(i as usize) {
            let g = gops.group_of(p);
            let e = last_wanted.entry(g).or_insert(p);
            *e = (*e).max(p);
        }
    }
    let mut groups: Vec<(usize, usize)> = last_wanted
        .into_iter()
        .map(|(g, p)| (g, p + 1 - gops.starts[g]))
        .collect();
    groups.sort_unstable();
    groups
}

/// What every worker of [`decode_groups_in_parallel`] shares.
struct Job<'a> {
    /// Packet data by decode position (`None` outside the wanted groups).
    packets: &'a [Option<ff::Packet>],
    meta: &'a [PacketMeta],
    gops: &'a Gops,
    indices: &'a [u64],
}

/// Splits `groups` (with costs) across `workers` decoders of `threads_each` threads, balancing the
/// cost, and stores what they decode in `out`. A worker that fails leaves its frames missing (the
/// caller falls back to decoding everything).
fn decode_groups_in_parallel(
    job: &Job<'_>,
    parameters: &ff::codec::Parameters,
    groups: &[(usize, usize)],
    workers: usize,
    threads_each: usize,
    out: &mut Output,
) {
    let mut by_cost = groups.to_vec();
    by_cost.sort_unstable_by_key(|b| std::cmp::Reverse(b.1));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); workers];
    for (g, cost) in by_cost {
        if let Some(bin) = bins.iter_mut().min_by_key(|b| b.0) {
            bin.0 += cost;
            bin.1.push(g);
        }
    }
    let results: Vec<(Vec<Option<RgbImage>>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = bins
            .into_iter()
            .filter(|b| !b.1.is_empty())
            .map(|(_, mut ids)| {
                ids.sort_unstable();
                // An owned copy per worker: FFmpeg objects are not shared between threads.
                let parameters = parameters.clone();
                scope.spawn(move || {
                    let mut decoder = open_decoder(&parameters, threads_each.max(1)).ok()?;
                    let mut part = Output::new(job.indices);
                    skip_to_keyframes(&mut decoder, job, &ids, &mut part);
                    Some((part.slots, part.decoded))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    for (slots, decoded) in results {
        out.absorb(slots, decoded);
    }
}

/// Decodes the groups `ids` (ascending), skipping non-reference frames that are not wanted and
/// stopping each group after its last wanted frame.
fn skip_to_keyframes(
    decoder: &mut ff::decoder::Video,
    job: &Job<'_>,
    ids: &[usize],
    out: &mut Output,
) {
    let Job {
        packets,
        meta,
        gops,
        ..
    } = *job;
    let pts_to_index: HashMap<i64, u64> = meta
        .iter()
        .zip(&gops.shown)
        .filter_map(|(p, &r)| Some((p.pts?, r)))
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
    for &g in ids {
        let start = gops.starts[g];
        if next_fed.is_some_and(|n| n != start) {
            drain(decoder, out, &mut frame, &mut index_of);
        }
        let end = gops.starts.get(g + 1).copied().unwrap_or(meta.len());
        let group_done = |out: &Output| (start..end).all(|p| !out.wants(gops.shown[p]));
        for p in start..end {
            let Some(packet) = packets.get(p).and_then(Option::as_ref) else {
                continue;
            };
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

/// Opens `path` again for a later demuxing pass.
fn reopen(path: &Path) -> Result<ff::format::context::Input> {
    ff::format::input(path).map_err(|e| Error::VideoDecode {
        what: path.display().to_string(),
        reason: format!("reopen: {e}"),
    })
}

/// Reads the packets of `stream` again, keeping the data of those whose decode position `keep`
/// accepts.
fn read_packets(
    path: &Path,
    stream: usize,
    mut keep: impl FnMut(usize) -> bool,
) -> Result<Vec<Option<ff::Packet>>> {
    let mut input = reopen(path)?;
    Ok(input
        .packets()
        .filter(|(s, p)| s.index() == stream && p.size() > 0)
        .enumerate()
        .map(|(i, (_, p))| keep(i).then_some(p))
        .collect())
}

/// Decodes every frame in order, reading the file again, until the last wanted frame.
fn decode_all(
    decoder: &mut ff::decoder::Video,
    path: &Path,
    stream: usize,
    out: &mut Output,
) -> Result<()> {
    let mut input = reopen(path)?;
    let mut frame = ff::frame::Video::empty();
    let mut next = 0u64;
    let mut index_of = |_: &ff::frame::Video| {
        let i = next;
        next += 1;
        Some(i)
    };
    for (s, packet) in input.packets() {
        if s.index() != stream || packet.size() == 0 {
            continue;
        }
        send(decoder, &packet, out, &mut frame, &mut index_of);
        if out.done() {
            break;
        }
    }
    drain(decoder, out, &mut frame, &mut index_of);
    Ok(())
}
