use kiln_plugin_api::StorageError;

/// A chunk that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk format version {0} is not supported")]
    Version(u8),
    #[error("chunk truncated at byte {0}")]
    Truncated(usize),
}

impl From<ChunkError> for StorageError {
    fn from(e: ChunkError) -> Self {
        StorageError::Corrupt(e.to_string())
    }
}

/// An error of sled or of the chunk store, as the storage reports it.
pub(crate) fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}
