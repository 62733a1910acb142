//! Finding `/chosen/bootargs` in a flattened device tree (Devicetree Specification v0.4, 5
//! "Flattened Devicetree (DTB) Format"), reading it one byte at a time: a guest with its MMU
//! off sees RAM as Device memory, where a wider unaligned load faults, so the reader never
//! assumes an alignment. Pure and host-tested; the guest side reads the bytes with volatile loads.

/// The header magic, big-endian `0xd00dfeed`.
const MAGIC: u32 = 0xd00d_feed;
/// Structure block tokens (5.4.1).
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Bigger than any device tree a VMM writes (it sits in the last 2 MiB of guest RAM).
const MAX_SIZE: usize = 2 << 20;

/// Where the value of `/chosen/bootargs` lies in the blob: `(offset, length)`, the length
/// without its terminating NUL. `None` for a blob that is not a device tree, or without the
/// property. `byte(i)` reads byte `i` of the blob; it is only called below the header's
/// `totalsize` (at most 2 MiB).
pub fn chosen_bootargs(byte: impl Fn(usize) -> u8) -> Option<(usize, usize)> {
    let word = |at: usize| u32::from_be_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)]);
    if word(0) != MAGIC {
        return None;
    }
    let size = (word(4) as usize).min(MAX_SIZE);
    let structure = word(8) as usize;
    let strings = word(12) as usize;
    let in_blob = |at: usize, len: usize| at.checked_add(len).is_some_and(|end| end <= size);
    let name_is = |at: usize, name: &[u8]| {
        in_blob(at, name.len() + 1)
            && name.iter().enumerate().all(|(i, &b)| byte(at + i) == b)
            && byte(at + name.len()) == 0
    };
    let mut at = structure;
    let mut depth = 0usize;
    // Depth of the node `/chosen` while inside it, else 0.
    let mut chosen = 0usize;
    while in_blob(at, 4) {
        let token = word(at);
        at += 4;
        match token {
            BEGIN_NODE => {
                depth += 1;
                if depth == 2 && chosen == 0 && name_is(at, b"chosen") {
                    chosen = depth;
                }
                // The name, NUL-terminated, padded to 4 bytes.
                while in_blob(at, 1) && byte(at) != 0 {
                    at += 1;
                }
                at = (at + 4) & !3;
            }
            END_NODE => {
                if depth == chosen {
                    chosen = 0;
                }
                depth = depth.checked_sub(1)?;
            }
            PROP => {
                if !in_blob(at, 8) {
                    return None;
                }
                let len = word(at) as usize;
                let name = word(at + 4) as usize;
                let value = at + 8;
                if !in_blob(value, len) {
                    return None;
                }
                if chosen != 0 && depth == chosen && name_is(strings + name, b"bootargs") {
                    let text = (0..len).take_while(|&i| byte(value + i) != 0).count();
                    return Some((value, text));
                }
                at = (value + len + 3) & !3;
            }
            NOP => {}
            END => return None,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with the root node, `/memory` (one property) and `/chosen` with `stdout-path` and
    /// `bootargs` = `args`.
    fn blob(args: &str) -> Vec<u8> {
        let strings = b"reg\0stdout-path\0bootargs\0".to_vec();
        let mut structure = Vec::new();
        let token = |s: &mut Vec<u8>, t: u32| s.extend_from_slice(&t.to_be_bytes());
        let node = |s: &mut Vec<u8>, name: &str| {
            token(s, BEGIN_NODE);
            s.extend_from_slice(name.as_bytes());
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let prop = |s: &mut Vec<u8>, name: u32, value: &[u8]| {
            token(s, PROP);
            s.extend_from_slice(&(value.len() as u32).to_be_bytes());
            s.extend_from_slice(&name.to_be_bytes());
            s.extend_from_slice(value);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        node(&mut structure, "");
        node(&mut structure, "memory@40000000");
        prop(&mut structure, 0, &[0; 16]);
        // A bootargs property outside /chosen is not the one.
        prop(&mut structure, 16, b"wrong\0");
        token(&mut structure, END_NODE);
        node(&mut structure, "chosen");
        prop(&mut structure, 4, b"/pl011@9000000\0");
        let mut value = args.as_bytes().to_vec();
        value.push(0);
        prop(&mut structure, 16, &value);
        token(&mut structure, END_NODE);
        token(&mut structure, END_NODE);
        token(&mut structure, END);
        let header = 40;
        let strings_at = header + structure.len();
        let total = strings_at + strings.len();
        let mut out = Vec::new();
        for field in [MAGIC, total as u32, header as u32, strings_at as u32] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.resize(header, 0);
        out.extend_from_slice(&structure);
        out.extend_from_slice(&strings);
        out
    }

    fn find(bytes: &[u8]) -> Option<String> {
        let (at, len) = chosen_bootargs(|i| bytes.get(i).copied().unwrap_or(0))?;
        Some(String::from_utf8(bytes[at..at + len].to_vec()).unwrap())
    }

    #[test]
    fn finds_the_bootargs_of_chosen_only() {
        assert_eq!(find(&blob("victim")).as_deref(), Some("victim"));
        assert_eq!(find(&blob("")).as_deref(), Some(""));
        assert_eq!(
            find(&blob("attack cpu-off x")).as_deref(),
            Some("attack cpu-off x")
        );
    }

    #[test]
    fn refuses_what_is_not_a_device_tree() {
        assert_eq!(find(&[0; 64]), None);
        let mut truncated = blob("victim");
        truncated.truncate(60);
        assert_eq!(find(&truncated), None);
        // A garbage token ends the walk.
        let mut garbage = blob("victim");
        garbage[40..44].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(find(&garbage), None);
    }
}
