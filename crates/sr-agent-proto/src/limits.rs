//! Size limits: every length the peer controls is checked against one of these before it is
//! trusted, so hostile input costs at most `max_frame` bytes of buffer.

/// Bounds on frames and on the fields of control messages.
///
/// Both sides should use the same limits: the encoder checks them too, so a sender finds out
/// before the receiver refuses. [`Limits::default`] is what docs/agent-protocol.md documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest value of a frame's length prefix (the kind byte plus the body).
    pub max_frame: u32,
    /// Largest JSON body of a control frame.
    pub max_control_body: u32,
    /// Most argv entries of an exec.
    pub max_argv: usize,
    /// Longest single argv entry, in bytes.
    pub max_arg_len: usize,
    /// Most environment variables of an exec.
    pub max_env: usize,
    /// Longest environment entry (`name` plus `value`), in bytes.
    pub max_env_len: usize,
    /// Longest path (exec cwd, file operations, symlink targets), in bytes.
    pub max_path: usize,
    /// Longest file name in a listing, in bytes.
    pub max_name: usize,
    /// Most entries in one `listing` message (a directory is sent as several).
    pub max_list_entries: usize,
    /// Most items in a small list (features, mounts, rlimits, Landlock rules).
    pub max_items: usize,
    /// Longest short string (names, versions, features, facts), in bytes.
    pub max_short: usize,
    /// Longest free-text message (error messages), in bytes.
    pub max_text: usize,
}

/// Bytes of a data frame's own header (stream byte, then the 64-bit id).
pub const DATA_HEADER_LEN: usize = 9;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 1024 * 1024,
            max_control_body: 256 * 1024,
            max_argv: 4096,
            max_arg_len: 128 * 1024,
            max_env: 1024,
            max_env_len: 32 * 1024,
            max_path: 4096,
            max_name: 255,
            max_list_entries: 1024,
            max_items: 256,
            max_short: 256,
            max_text: 4096,
        }
    }
}

impl Limits {
    /// The most payload bytes one data frame can carry under these limits.
    pub fn max_data_chunk(&self) -> usize {
        (self.max_frame as usize).saturating_sub(1 + DATA_HEADER_LEN)
    }

    /// The largest control body a frame can actually carry: the smaller of `max_control_body`
    /// and what `max_frame` leaves after the kind byte.
    pub fn effective_control_body(&self) -> u32 {
        self.max_control_body.min(self.max_frame.saturating_sub(1))
    }
}
