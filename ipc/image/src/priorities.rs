//! The services' scheduling priorities from the manifest, as the kernel reads them at boot: the
//! payload entry of kind `Manifest` named [`PRIORITIES_ENTRY`] holds one byte per service, in
//! image order.

/// The name of the priorities entry.
pub const PRIORITIES_ENTRY: &str = "priorities";

/// Why a priorities entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrioritiesError;

/// Checks a priorities entry for an image of `services` services.
///
/// # Errors
/// [`PrioritiesError`] unless it has exactly one byte per service.
pub fn decode(bytes: &[u8], services: usize) -> Result<&[u8], PrioritiesError> {
    if bytes.len() == services {
        Ok(bytes)
    } else {
        Err(PrioritiesError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_per_service() {
        assert_eq!(decode(&[100, 7], 2), Ok(&[100u8, 7][..]));
        assert_eq!(decode(&[100], 2), Err(PrioritiesError));
        assert_eq!(decode(&[1, 2, 3], 2), Err(PrioritiesError));
    }
}
