//! The crate's one error type.

/// Everything that can go wrong in `pixel-reward`: invalid configurations and invalid groups.
///
/// Answer extraction and matching never fail (unreadable answers score 0); only the reward and the group
/// statistics, which are handed numbers and configurations, return errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group of rollouts (or of rewards) was empty, so RaPR / the mean are undefined.
    #[error("empty group: {what} needs at least one rollout")]
    EmptyGroup {
        /// The computation that was asked for.
        what: &'static str,
    },
    /// A reward given to a group statistic was NaN or infinite.
    #[error("reward {index} of the group is not finite ({value})")]
    NonFiniteReward {
        /// Position of the reward in the group.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A configuration field is outside its valid range.
    #[error("invalid reward config: {field} = {value} ({reason})")]
    InvalidConfig {
        /// The field name, as in the serde form.
        field: &'static str,
        /// The offending value.
        value: f64,
        /// What the valid range is.
        reason: &'static str,
    },
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
