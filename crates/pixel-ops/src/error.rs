//! The crate's one error type.

/// Everything that can go wrong in `pixel-ops`: bad files, bad sizes, bad tool calls.
///
/// Variants carry the facts a user (or a model, through an error observation) needs to fix the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    // ---- images: loading (load.rs) ----
    /// The bytes are not an image the decoder can read (unknown format, truncated, corrupt, empty).
    #[error("cannot decode image {what}: {reason}")]
    Decode {
        /// The file path, or `<memory>` for bytes.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// The image header claims a size beyond the decode limits (a decompression bomb or a corrupt
    /// header); nothing was allocated for the pixels.
    #[error(
        "image {what} is {width}x{height} ({pixels} pixels), beyond the decode limits (max {max_width}x{max_height}, {max_pixels} pixels)"
    )]
    ImageTooLarge {
        /// The file path, or `<memory>` for bytes.
        what: String,
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// Limit on the width.
        max_width: u32,
        /// Limit on the height.
        max_height: u32,
        /// Limit on the pixel count.
        max_pixels: u64,
    },
    /// Decoding the image and converting it to RGB would need more bytes than
    /// `DecodeLimits::max_alloc`: the decoded pixels plus every buffer the conversion makes
    /// (checked from the header; nothing was allocated for the pixels).
    #[error(
        "image {what} is {width}x{height}: decoding it needs {decoded_bytes} bytes and converting it to RGB {conversion_bytes} more, beyond the decode limit of {max_alloc} bytes"
    )]
    ImageAllocTooLarge {
        /// The file path, or `<memory>` for bytes.
        what: String,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Bytes of the decoded pixels in the file's own colour type.
        decoded_bytes: u64,
        /// Bytes of the buffers the conversion to 8-bit RGB makes (0 for an 8-bit RGB image).
        conversion_bytes: u64,
        /// The limit, `DecodeLimits::max_alloc`.
        max_alloc: u64,
    },
    /// An image file holds more bytes than `DecodeLimits::max_alloc`, the most read from one file;
    /// reading stopped at the limit.
    #[error("file {path} holds more than {max_bytes} bytes, the decode limit")]
    FileTooLarge {
        /// The file.
        path: std::path::PathBuf,
        /// The limit, `DecodeLimits::max_alloc`.
        max_bytes: u64,
    },
    // ---- images: sizes (resize.rs) ----
    /// qwen-vl-utils `smart_resize`: the aspect ratio is above 200 (message as in qwen-vl-utils).
    #[error("absolute aspect ratio must be smaller than {max}, got {ratio:?}")]
    AspectRatio {
        /// The larger side over the smaller one.
        ratio: f64,
        /// The limit (200).
        max: u32,
        /// Image height.
        height: u32,
        /// Image width.
        width: u32,
    },
    /// An image size with a zero side (nothing to resize).
    #[error("image size {width}x{height} has a zero side")]
    ZeroSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// `min_pixels > max_pixels`, or a zero factor.
    #[error(
        "invalid pixel limits: min_pixels {min_pixels} > max_pixels {max_pixels} or factor {factor} is 0"
    )]
    InvalidPixelLimits {
        /// Lower bound on `h * w`.
        min_pixels: u64,
        /// Upper bound on `h * w`.
        max_pixels: u64,
        /// The side multiple.
        factor: u32,
    },
    /// A resize that would allocate more than the resize limit for one buffer (absurd target size).
    #[error(
        "resizing to {width}x{height} needs {bytes} bytes for one buffer, beyond the limit of {limit}"
    )]
    ResizeTooLarge {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
        /// Bytes the largest buffer would need.
        bytes: u64,
        /// The limit (`resize::bicubic::MAX_RESIZE_BYTES`).
        limit: u64,
    },
    // ---- images: crops (crop.rs) ----
    /// A box coordinate is NaN or infinite.
    #[error("bounding box {bbox:?} has a value that is not a finite number")]
    NonFiniteBox {
        /// The box as given.
        bbox: [f64; 4],
    },
    /// A negative box coordinate, rejected because `CropConfig::reject_negative` is set (the official
    /// code clamps it instead).
    #[error("bounding box {bbox:?} has a negative value")]
    NegativeBox {
        /// The box as given.
        bbox: [f64; 4],
    },
    /// Pillow's `crop` message: the padded box's right edge is left of its left edge.
    #[error("Coordinate 'right' is less than 'left'")]
    CropRightLessThanLeft,
    /// Pillow's `crop` message: the padded box's lower edge is above its upper edge.
    #[error("Coordinate 'lower' is less than 'upper'")]
    CropLowerLessThanUpper,
    /// The official `crop_image_normalized` message: the crop is not larger than the minimum on both sides.
    #[error("Cropped image is too small: {width}x{height}")]
    CropTooSmall {
        /// Crop width in pixels.
        width: u32,
        /// Crop height in pixels.
        height: u32,
    },
    /// verl's `image_zoom_in_tool` message: the box is invalid or too small even after growing. The
    /// numbers print as Rust formats them; the protocol layer re-renders the box as the model wrote it.
    #[error(
        "Error: The specified bounding box [{}, {}, {}, {}] is invalid or results in a crop smaller than the minimum size of {min}x{min}.",
        bbox[0], bbox[1], bbox[2], bbox[3]
    )]
    ZoomBoxInvalid {
        /// The box as given.
        bbox: [f64; 4],
        /// The minimum side (28).
        min: u32,
    },
    /// DeepEyes' `image_zoom_in_tool` message: the box is empty, inverted or too elongated.
    #[error("ZOOM IN ARGUMENTS ARE INVALID")]
    ZoomArgumentsInvalid,
    // ---- video (video/) ----
    /// qwen-vl-utils `smart_nframes`: the frame count is outside `[2, total_frames]` (message as in
    /// qwen-vl-utils), e.g. a 1-frame video or more frames asked for than the video has.
    #[error("nframes should in interval [2, {total_frames}], but got {nframes}.")]
    NFramesOutOfRange {
        /// The computed frame count.
        nframes: f64,
        /// Frames in the video.
        total_frames: u64,
    },
    /// The video's frame rate is zero, negative or not a number.
    #[error("video frame rate {fps} is not a positive number")]
    InvalidVideoFps {
        /// The frame rate.
        fps: f64,
    },
    /// A video with no frames (an empty frame list, or a file whose stream decodes to nothing).
    #[error("video {what} has no frames")]
    EmptyVideo {
        /// The file path, or a description of the source.
        what: String,
    },
    /// The frames of a video differ in size.
    #[error(
        "frame {index} of video {what} is {width}x{height}, but frame 0 is {first_width}x{first_height}"
    )]
    FrameSizeMismatch {
        /// The file path, or a description of the source.
        what: String,
        /// 0-based index of the first frame that differs.
        index: usize,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// Width of frame 0.
        first_width: u32,
        /// Height of frame 0.
        first_height: u32,
    },
    /// Keeping one more frame would bring the video's kept frames (as 8-bit RGB, one buffer per
    /// kept frame) beyond the byte budget (`DecodeOptions::max_total_bytes` or
    /// `FrameFilesOptions::max_total_bytes`); nothing was allocated for the frame.
    #[error(
        "video {what}: keeping frame {index} ({frame_bytes} bytes as RGB) would bring the kept frames to {total_bytes} bytes, beyond the budget of {max_total_bytes} bytes"
    )]
    FrameBudgetExceeded {
        /// The file path (for frame lists: the frame's file).
        what: String,
        /// 0-based index of the frame in the source (for frame lists: in the list).
        index: u64,
        /// Bytes the frame adds (all the slots it fills when it is sampled more than once).
        frame_bytes: u64,
        /// Bytes of the kept frames with this one.
        total_bytes: u64,
        /// The budget.
        max_total_bytes: u64,
    },
    /// A frame list longer than `FrameFilesOptions::max_files`; no file was read.
    #[error("frame list {what} has {count} files, more than the limit of {max_files}")]
    TooManyFrameFiles {
        /// The first file of the list.
        what: String,
        /// Files in the list.
        count: usize,
        /// The limit.
        max_files: usize,
    },
    /// FFmpeg could not open, demux or decode the video file (truncated, corrupt, not a video).
    #[error("cannot decode video {what}: {reason}")]
    VideoDecode {
        /// The file path.
        what: String,
        /// FFmpeg's message and where it happened.
        reason: String,
    },
    /// The container holds no video stream (e.g. an audio-only file).
    #[error("file {what} has no video stream")]
    NoVideoStream {
        /// The file path.
        what: String,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
