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
//! Memory is bounded by the options, not by the file: the header's frame size is checked when the
//! file is opened; every decoded frame's real size is checked again before it is converted (a stream
//! may change size after its header); and the kept RGB frames share the byte budget
//! [`DecodeOptions::max_total_bytes`] across all parallel decoders. Breaking a limit stops every
//! decoder and is a typed error; nothing is allocated for the offending RGB frame. FFmpeg allocates
//! each decoded frame itself, so its decoders get a backstop through their `max_pixels` option:
//! twice the pixel limit (FFmpeg counts the width padded to its stride alignment, up to 64, so the
//! exact limit would refuse narrow frames this crate accepts). Frames beyond the backstop are refused
//! by FFmpeg before allocation and end as [`Error::VideoDecode`] naming the frame.
//!
//! Frame `i` means the `i`-th frame in presentation order, as decode-all readers (PyAV, decord,
//! torchcodec) count. The fast path needs every packet to carry a unique timestamp and closed
//! groups of pictures (no frame shown before its group's keyframe); otherwise, or when the fast path
//! misses a frame, every frame is decoded in order ([`DecodeStrategy::DecodeAll`]). Packets that
//! fail to decode are skipped as the `ffmpeg` CLI does; a wanted frame that never comes out is an
//! [`Error::VideoDecode`].

mod output;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use ff::Discard;
use ff::error::EAGAIN;
use ffmpeg_next as ff;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::sampling::{FrameCount, FrameSampling};
use super::{DEFAULT_MAX_TOTAL_FRAME_BYTES, Video, VideoInfo, VideoSource};
use crate::{Error, Result};
use output::{FrameLimits, Output, Tally};

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
    /// Largest accepted `width * height` of a frame (default 178,956,970, the image limit), checked
    /// on the header and on every decoded frame; twice it is FFmpeg's own backstop (module docs).
    pub max_frame_pixels: u64,
    /// Most bytes the kept frames may take together as 8-bit RGB at source resolution, one buffer
    /// per kept frame (a frame sampled twice counts twice). Default
    /// [`DEFAULT_MAX_TOTAL_FRAME_BYTES`]: the official 16 frames of a 4K source. Each frame is
    /// checked against what is left before it is converted.
    pub max_total_bytes: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            count: FrameCount::official(),
            strategy: DecodeStrategy::default(),
            threads: 0,
            split_groups: true,
            max_frame_pixels: crate::load::DecodeLimits::default().max_pixels,
            max_total_bytes: DEFAULT_MAX_TOTAL_FRAME_BYTES,
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
    // The header's size, read by a decoder without the backstop (FFmpeg refuses to open one whose
    // header is beyond its `max_pixels`, which would hide the size from the error).
    let header = open_decoder(&parameters, 1, u64::MAX).map_err(|e| err("open decoder", e))?;
    let (width, height) = (header.width(), header.height());
    drop(header);
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
    let decoder =
        open_decoder(&parameters, threads, max_frame_pixels).map_err(|e| err("open decoder", e))?;
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

/// A decoder for `parameters` with `threads` frame threads (0: FFmpeg picks) that refuses to
/// allocate frames of more than `2 * max_pixels` pixels, counting the padded width (FFmpeg's
/// `max_pixels` option, at most `i32::MAX`, its default); see the module docs.
fn open_decoder(
    parameters: &ff::codec::Parameters,
    threads: usize,
    max_pixels: u64,
) -> std::result::Result<ff::decoder::Video, ff::Error> {
    let mut context = ff::codec::Context::from_parameters(parameters.clone())?;
    context.set_threading(ff::threading::Config {
        kind: ff::threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    let codec = ff::decoder::find(parameters.id()).ok_or(ff::Error::DecoderNotFound)?;
    let mut options = ff::Dictionary::new();
    let max_pixels = max_pixels
        .saturating_mul(2)
        .min(i32::MAX as u64)
        .to_string();
    options.set("max_pixels", &max_pixels);
    context.decoder().open_as_with(codec, options)?.video()
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
    let limits = FrameLimits::new(&what, options);
    let Demuxed {
        parameters,
        mut decoder,
        stream,
        meta,
        fps,
    } = open(path, options.threads, options.max_frame_pixels)?;
    let plan = FrameSampling::plan(options.count, meta.len() as u64, fps)?;
    let mut out = Output::new(&plan.indices, &limits);
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
                (workers, threads / workers),
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
    if let Some(e) = limits.take_error() {
        return Err(e);
    }
    let decoded = out.tally.decoded;
    let failures = out.tally.describe();
    let frames = out.finish().map_err(|index| Error::VideoDecode {
        what: what.clone(),
        reason: format!(
            "frame {index} of {} could not be decoded{failures}",
            meta.len()
        ),
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
    out: &mut Output<'_>,
    frame: &mut ff::frame::Video,
    mut index_of: impl FnMut(&ff::frame::Video) -> Option<u64>,
) {
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                out.tally.decoded += 1;
                if let Some(i) = index_of(frame) {
                    out.store(i, frame);
                }
            }
            Err(ff::Error::Eof | ff::Error::Other { errno: EAGAIN }) => break,
            Err(e) => {
                out.tally.error(&e);
                break;
            }
        }
    }
}

fn send(
    decoder: &mut ff::decoder::Video,
    packet: &ff::Packet,
    out: &mut Output<'_>,
    frame: &mut ff::frame::Video,
    index_of: &mut impl FnMut(&ff::frame::Video) -> Option<u64>,
) {
    // Decode errors on one packet are skipped, as the ffmpeg CLI does; a frame that never comes
    // out is reported at the end.
    let sent = match decoder.send_packet(packet) {
        Err(ff::Error::Other { errno: EAGAIN }) => {
            receive(decoder, out, frame, &mut *index_of);
            decoder.send_packet(packet)
        }
        other => other,
    };
    if let Err(e) = sent {
        out.tally.error(&e);
    }
    receive(decoder, out, frame, &mut *index_of);
}

fn drain(
    decoder: &mut ff::decoder::Video,
    out: &mut Output<'_>,
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
/// cost, and stores what they decode in `out` (the workers share `out`'s limits). A worker that
/// fails leaves its frames missing (the caller falls back to decoding everything).
fn decode_groups_in_parallel(
    job: &Job<'_>,
    parameters: &ff::codec::Parameters,
    groups: &[(usize, usize)],
    (workers, threads_each): (usize, usize),
    out: &mut Output<'_>,
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
    let limits = out.limits;
    let max_pixels = limits.max_frame_pixels;
    let results: Vec<(Vec<Option<RgbImage>>, Tally)> = std::thread::scope(|scope| {
        let handles: Vec<_> = bins
            .into_iter()
            .filter(|b| !b.1.is_empty())
            .map(|(_, mut ids)| {
                ids.sort_unstable();
                // An owned copy per worker: FFmpeg objects are not shared between threads.
                let parameters = parameters.clone();
                scope.spawn(move || {
                    let mut decoder =
                        open_decoder(&parameters, threads_each.max(1), max_pixels).ok()?;
                    let mut part = Output::new(job.indices, limits);
                    skip_to_keyframes(&mut decoder, job, &ids, &mut part);
                    Some((part.slots, part.tally))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    for (slots, tally) in results {
        out.absorb(slots, tally);
    }
}

/// Decodes the groups `ids` (ascending), skipping non-reference frames that are not wanted and
/// stopping each group after its last wanted frame.
fn skip_to_keyframes(
    decoder: &mut ff::decoder::Video,
    job: &Job<'_>,
    ids: &[usize],
    out: &mut Output<'_>,
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
        let group_done = |out: &Output<'_>| (start..end).all(|p| !out.wants(gops.shown[p]));
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
    out: &mut Output<'_>,
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
