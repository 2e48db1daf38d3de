//! The error every conversion gives, below the converters and the JSON reader and writer that
//! both use it.

use base64::Engine as _;

/// A conversion failure; names what was wrong with the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConversionError {
    pub message: String,
    /// The same conversion may succeed later (a schema registry that is away): the worker
    /// retries it as `errors.retry.*` allow before the error policy decides.
    pub retriable: bool,
}

impl ConversionError {
    /// A failure of the data itself: trying again cannot help.
    pub fn new(message: impl Into<String>) -> ConversionError {
        ConversionError {
            message: message.into(),
            retriable: false,
        }
    }

    /// A failure of something the converter needs (its schema registry): may pass.
    pub fn retriable(message: impl Into<String>) -> ConversionError {
        ConversionError {
            message: message.into(),
            retriable: true,
        }
    }
}

/// Decodes base64 as Jackson's `binaryValue` does.
pub(crate) fn base64_decode(s: &str) -> Result<Vec<u8>, ConversionError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ConversionError::new(format!("invalid base64 bytes: {e}")))
}
