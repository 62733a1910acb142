//! The fuzzer's pseudo-random numbers: SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014), small, seedable and the same on every build.

/// A SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One of `items`, which are drawn before `rng` is borrowed to choose among them.
pub fn pick_of<const N: usize>(items: [u64; N], rng: &mut Rng) -> u64 {
    rng.pick(&items)
}

/// A `u64` from build-time text: decimal, or hexadecimal after `0x`, with `_` allowed; the
/// build fails on anything else, so a mistyped setting is never silently the default.
#[must_use]
pub const fn parse(text: Option<&str>, default: u64) -> u64 {
    let Some(text) = text else {
        return default;
    };
    let bytes = text.as_bytes();
    let (radix, mut i) =
        if bytes.len() > 2 && bytes[0] == b'0' && (bytes[1] == b'x' || bytes[1] == b'X') {
            (16, 2)
        } else {
            (10, 0)
        };
    let mut value: u64 = 0;
    let mut digits = 0;
    while i < bytes.len() {
        let digit = match bytes[i] {
            b'_' => {
                i += 1;
                continue;
            }
            b @ b'0'..=b'9' => (b - b'0') as u64,
            b @ b'a'..=b'f' if radix == 16 => (b - b'a' + 10) as u64,
            b @ b'A'..=b'F' if radix == 16 => (b - b'A' + 10) as u64,
            _ => panic!("not a number (decimal, or hexadecimal after 0x)"),
        };
        value = match value.checked_mul(radix) {
            Some(v) => match v.checked_add(digit) {
                Some(v) => v,
                None => panic!("number too large for 64 bits"),
            },
            None => panic!("number too large for 64 bits"),
        };
        digits += 1;
        i += 1;
    }
    if digits == 0 {
        panic!("empty number");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next(), b.next());
            assert!(a.below(10) < 10);
            b.below(10);
        }
        assert_eq!(Rng::new(1).below(0), 0);
        assert_ne!(Rng::new(1).next(), Rng::new(2).next());
    }

    #[test]
    fn parses_build_settings() {
        assert_eq!(parse(None, 5), 5);
        assert_eq!(parse(Some("20000"), 5), 20_000);
        assert_eq!(parse(Some("1_000_000"), 5), 1_000_000);
        assert_eq!(parse(Some("0x5eed"), 5), 0x5eed);
        assert_eq!(parse(Some("0XFF_ff"), 5), 0xffff);
        assert_eq!(parse(Some("18446744073709551615"), 5), u64::MAX);
        for bad in ["", "0x", "12a", "-1", "18446744073709551616"] {
            assert!(
                std::panic::catch_unwind(|| parse(Some(bad), 5)).is_err(),
                "{bad}"
            );
        }
    }
}
