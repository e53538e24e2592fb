//! The `select_frames` operation with the official rules (TIGER-AI-Lab/Pixel-Reasoner,
//! `execute_tool` in `experience_maker.py`).
//!
//! The model asks for 1-based frame numbers, e.g. `{"target_frames": [3, 7, 12]}`. The official
//! checks, in order:
//! 1. more than 8 numbers → [`ToolCallError::TooManyFrames`] (`"Execution Error: You have selected
//!    9 frames in total. Think again ..."`);
//! 2. the largest number above the frame count → [`ToolCallError::FramesOutOfRange`]
//!    (``"Execution Error: There are 16 frames numbered in range [1,16]. Your selection
//!    `target_frames=[1, 17]` is out of range."``).
//!
//! Two cases the official code leaves to Python and this crate makes explicit: an empty list
//! (Python: `max() arg is an empty sequence`) is [`ToolCallError::NoFramesSelected`], and numbers
//! below 1 (Python indexes from the end: `0` picks the last frame) get the out-of-range error.
//! Duplicates and any order are allowed, as officially; frames come back in the order asked.
//!
//! The episode turns the result into the observation `"\nHere are the selected frames (Frame Size:
//! {W}x{H}, Numbered {a} to {b}):"` followed by the frames (see
//! [`Observation::frames`](crate::Observation::frames)). Note the official numbering: `a` is the
//! length of the episode's image list *before* the frames are added, where the video counts as one
//! entry (so the first `select_frames` of an episode announces frames numbered `1` to `k`), and
//! `b = a + k - 1`. During RL training the official code also resizes each selected frame
//! (`resize_cropped`, 4 to 400 visual tokens: [`PixelLimits::OFFICIAL_TRAIN_FRAME`]); at evaluation
//! frames are used as they are.
//!
//! [`PixelLimits::OFFICIAL_TRAIN_FRAME`]: crate::PixelLimits::OFFICIAL_TRAIN_FRAME

use image::RgbImage;

use crate::ToolCallError;

/// Most frames one `select_frames` call may ask for (official: 8).
pub const MAX_SELECTED_FRAMES: usize = 8;

/// The frames a `select_frames` call picked, and the facts its observation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedFrames {
    /// The frames, in the order asked (copies of the video's frames).
    pub frames: Vec<RgbImage>,
    /// The 1-based frame numbers, as the model wrote them.
    pub numbers: Vec<usize>,
    /// Width of the frames (all frames of a video share one size).
    pub width: u32,
    /// Height of the frames.
    pub height: u32,
}

/// `select_frames` on a video's frames with the official limit of [`MAX_SELECTED_FRAMES`].
///
/// `target_frames` are the model's 1-based numbers; signed so that `0` and negatives from model
/// text are reported, not wrapped.
///
/// # Errors
/// The [`ToolCallError`] whose `Display` is the message the model sees: [`TooManyFrames`] (more
/// than 8), [`NoFramesSelected`] (empty), [`FramesOutOfRange`] (a number outside `[1, n]`).
///
/// [`TooManyFrames`]: ToolCallError::TooManyFrames
/// [`NoFramesSelected`]: ToolCallError::NoFramesSelected
/// [`FramesOutOfRange`]: ToolCallError::FramesOutOfRange
///
/// # Examples
/// ```
/// use pixel_ops::image::RgbImage;
/// use pixel_ops::video::select_frames;
///
/// let frames: Vec<RgbImage> = (0..16).map(|i| RgbImage::from_pixel(4, 2, [i as u8; 3].into())).collect();
/// let picked = select_frames(&frames, &[2, 16]).unwrap();
/// assert_eq!(picked.frames[1].get_pixel(0, 0).0, [15, 15, 15]);
/// assert_eq!((picked.width, picked.height), (4, 2));
///
/// let err = select_frames(&frames, &[1, 17]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "Execution Error: There are 16 frames numbered in range [1,16]. Your selection `target_frames=[1, 17]` is out of range."
/// );
/// ```
pub fn select_frames(
    frames: &[RgbImage],
    target_frames: &[i64],
) -> Result<SelectedFrames, ToolCallError> {
    select_frames_with_limit(frames, target_frames, MAX_SELECTED_FRAMES)
}

/// [`select_frames`] with another limit on how many frames one call may pick.
///
/// # Errors
/// As [`select_frames`].
pub fn select_frames_with_limit(
    frames: &[RgbImage],
    target_frames: &[i64],
    max_frames: usize,
) -> Result<SelectedFrames, ToolCallError> {
    let numbers = checked_numbers(frames.len(), target_frames, max_frames)?;
    let picked: Vec<RgbImage> = numbers.iter().map(|&n| frames[n - 1].clone()).collect();
    let (width, height) = picked.first().map_or((0, 0), RgbImage::dimensions);
    Ok(SelectedFrames {
        frames: picked,
        numbers,
        width,
        height,
    })
}

/// The checks of [`select_frames_with_limit`] on a video of `available` frames, without picking
/// anything: the 1-based numbers, each in `[1, available]`.
///
/// # Errors
/// As [`select_frames`].
pub(crate) fn checked_numbers(
    available: usize,
    target_frames: &[i64],
    max_frames: usize,
) -> Result<Vec<usize>, ToolCallError> {
    if target_frames.len() > max_frames {
        return Err(ToolCallError::TooManyFrames {
            count: target_frames.len(),
            max: max_frames,
        });
    }
    if target_frames.is_empty() {
        return Err(ToolCallError::NoFramesSelected { max: max_frames });
    }
    target_frames
        .iter()
        .map(|&n| {
            usize::try_from(n)
                .ok()
                .filter(|&n| (1..=available).contains(&n))
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| ToolCallError::FramesOutOfRange {
            frames: target_frames.to_vec(),
            available,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(n: usize) -> Vec<RgbImage> {
        (0..n)
            .map(|i| RgbImage::from_pixel(3, 2, [i as u8, 0, 0].into()))
            .collect()
    }

    #[test]
    fn picks_in_the_order_asked_with_duplicates() {
        let v = video(16);
        let s = select_frames(&v, &[5, 1, 5]).unwrap();
        let firsts: Vec<u8> = s.frames.iter().map(|f| f.get_pixel(0, 0).0[0]).collect();
        assert_eq!(firsts, [4, 0, 4]);
        assert_eq!(s.numbers, [5, 1, 5]);
    }

    #[test]
    fn official_messages() {
        let v = video(16);
        let nine = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            select_frames(&v, &nine).unwrap_err().to_string(),
            "Execution Error: You have selected 9 frames in total. Think again which frames you need to check in details (no more than 8 frames)"
        );
        // More than 8 is reported before the range, as officially.
        let nine_bad = [1, 2, 3, 4, 5, 6, 7, 8, 99];
        assert!(matches!(
            select_frames(&v, &nine_bad),
            Err(ToolCallError::TooManyFrames { count: 9, max: 8 })
        ));
        assert_eq!(
            select_frames(&v, &[0]).unwrap_err().to_string(),
            "Execution Error: There are 16 frames numbered in range [1,16]. Your selection `target_frames=[0]` is out of range."
        );
        assert!(matches!(
            select_frames(&v, &[-3]),
            Err(ToolCallError::FramesOutOfRange { available: 16, .. })
        ));
        assert!(matches!(
            select_frames(&v, &[i64::MAX]),
            Err(ToolCallError::FramesOutOfRange { .. })
        ));
        assert!(matches!(
            select_frames(&v, &[]),
            Err(ToolCallError::NoFramesSelected { max: 8 })
        ));
        assert!(matches!(
            select_frames(&[], &[1]),
            Err(ToolCallError::FramesOutOfRange { available: 0, .. })
        ));
    }

    #[test]
    fn eight_frames_and_the_last_frame_are_allowed() {
        let v = video(16);
        let s = select_frames(&v, &[9, 10, 11, 12, 13, 14, 15, 16]).unwrap();
        assert_eq!(s.frames.len(), 8);
        assert_eq!(s.frames[7].get_pixel(0, 0).0[0], 15);
        assert!(select_frames_with_limit(&v, &[1, 2, 3], 2).is_err());
    }
}
