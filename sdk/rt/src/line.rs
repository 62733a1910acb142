//! A fixed-capacity text line for console output without an allocator.

/// Up to 256 bytes of text, built piece by piece; what does not fit is dropped.
#[derive(Debug)]
pub struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes: [0; 256],
            len: 0,
        }
    }

    /// Appends `text`.
    pub fn push(&mut self, text: &str) {
        for &b in text.as_bytes() {
            if self.len == self.bytes.len() {
                return;
            }
            self.bytes[self.len] = b;
            self.len += 1;
        }
    }

    /// Appends `value` in decimal.
    pub fn push_u64(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (value % 10) as u8;
            n += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            let digit = [digits[i]];
            self.push(core::str::from_utf8(&digit).unwrap_or("?"));
        }
    }

    /// The text so far.
    #[must_use]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        self.push(text);
        Ok(())
    }
}

/// Formats a line (at most 256 bytes) and writes it with `debug_write`.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut line = $crate::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.push("\n");
        $crate::debug_write(line.as_str());
    }};
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn builds_text() {
        let mut line = Line::new();
        line.push("n=");
        line.push_u64(0);
        line.push(" m=");
        line.push_u64(18_446_744_073_709_551_615);
        assert_eq!(line.as_str(), "n=0 m=18446744073709551615");
    }
}
