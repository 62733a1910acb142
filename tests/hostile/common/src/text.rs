//! A fixed-capacity text buffer (longer than the runtime's 256-byte `Line`), for summaries that
//! must reach the console in one `DebugWrite` (at most 1 KiB).

/// Up to `N` bytes of text; what does not fit is dropped, never split inside a character.
#[derive(Debug, Clone)]
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Text<N> {
    /// Empty.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// The text so far.
    #[must_use]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Write for Text<N> {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for c in text.chars() {
            let mut utf8 = [0; 4];
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            let Some(room) = self.bytes.get_mut(self.len..self.len + encoded.len()) else {
                return Ok(());
            };
            room.copy_from_slice(encoded);
            self.len += encoded.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Text;
    use core::fmt::Write;

    #[test]
    fn keeps_what_fits_whole() {
        let mut text = Text::<8>::new();
        write!(text, "ab{}", 12).unwrap();
        assert_eq!(text.as_str(), "ab12");
        write!(text, "cdeé").unwrap();
        // 'é' is two bytes: it does not fit in the last one and is dropped, not cut.
        assert_eq!(text.as_str(), "ab12cde");
        write!(text, "xy").unwrap();
        assert_eq!(text.as_str(), "ab12cdex");
    }
}
