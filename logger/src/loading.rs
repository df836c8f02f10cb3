//! Loading the logger's JSON configuration files (the keys file, the
//! event-type registry): [`LoadError`] names the file, and its source says
//! what is wrong with it, in the error type of that file's parser.

use std::path::{Path, PathBuf};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E: std::error::Error + 'static> {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The file was read, and what it holds is wrong.
    #[error("in {}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: E,
    },
}

/// Reads the file at `path` and parses its text with `parse`.
pub fn load<T, E: std::error::Error + 'static>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, LoadError<E>> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })
}
