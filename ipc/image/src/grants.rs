//! The endpoint and untyped grants of an image's manifest, as the kernel reads them at boot: the payload
//! entry of kind `Manifest` named [`GRANTS_ENTRY`] holds one two-byte record per grant,
//! `[granter, target]`, both service indices in image order (0 is the root). The granter holds
//! a badged capability to an endpoint that the target receives on (`caps = [{ endpoint = "…" }]`
//! in the manifest; `docs/architecture.md` has the slots).

/// The name of the grants entry.
pub const GRANTS_ENTRY: &str = "grants";
/// The most grants an image may carry.
pub const MAX_GRANTS: usize = 64;

/// One grant: service `granter` may call the endpoint of service `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The service that gets the capability (image order).
    pub granter: u8,
    /// The service whose endpoint it names (image order).
    pub target: u8,
}

/// Why a grants entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Not a whole number of records, or more than [`MAX_GRANTS`].
    Length,
    /// A record names a service the image does not have.
    NoSuchService(u8),
    /// A service granted its own endpoint.
    SelfGrant(u8),
    /// An untyped size (log2) outside 12 to 47.
    Size(u8),
}

/// Decodes and checks a grants entry for an image of `services` services.
///
/// # Errors
/// [`GrantError`] for a malformed entry.
pub fn decode(
    bytes: &[u8],
    services: usize,
) -> Result<impl Iterator<Item = Grant> + '_, GrantError> {
    if !bytes.len().is_multiple_of(2) || bytes.len() / 2 > MAX_GRANTS {
        return Err(GrantError::Length);
    }
    for record in bytes.chunks_exact(2) {
        let (granter, target) = (record[0], record[1]);
        for index in [granter, target] {
            if usize::from(index) >= services {
                return Err(GrantError::NoSuchService(index));
            }
        }
        if granter == target {
            return Err(GrantError::SelfGrant(granter));
        }
    }
    Ok(bytes.chunks_exact(2).map(|r| Grant {
        granter: r[0],
        target: r[1],
    }))
}

/// The name of the untyped entry: one two-byte record per piece of untyped RAM a service's
/// manifest asks for (`caps = [{ untyped = "…" }]`), `[service, size_bits]` in manifest order. The
/// SDK splits a size into power-of-two pieces of at least 4 KiB, largest first.
pub const UNTYPED_ENTRY: &str = "untyped";

/// One piece of untyped RAM for a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UntypedGrant {
    /// The service (image order).
    pub service: u8,
    /// log2 of its size: 12 to 47.
    pub size_bits: u8,
}

/// Splits `bytes` (a multiple of 4 KiB) into untyped pieces for `service`, largest first.
pub fn untyped_pieces(service: u8, bytes: u64) -> impl Iterator<Item = UntypedGrant> {
    (12..=47u8)
        .rev()
        .filter(move |bits| bytes & (1 << bits) != 0)
        .map(move |size_bits| UntypedGrant { service, size_bits })
}

/// Decodes and checks an untyped entry for an image of `services` services.
///
/// # Errors
/// [`GrantError::Length`] for a partial record or too many; [`GrantError::NoSuchService`];
/// [`GrantError::Size`] for a size outside 4 KiB to 128 TiB.
pub fn decode_untyped(
    bytes: &[u8],
    services: usize,
) -> Result<impl Iterator<Item = UntypedGrant> + '_, GrantError> {
    if !bytes.len().is_multiple_of(2) || bytes.len() / 2 > MAX_GRANTS {
        return Err(GrantError::Length);
    }
    for record in bytes.chunks_exact(2) {
        if usize::from(record[0]) >= services {
            return Err(GrantError::NoSuchService(record[0]));
        }
        if !(12..=47).contains(&record[1]) {
            return Err(GrantError::Size(record[1]));
        }
    }
    Ok(bytes.chunks_exact(2).map(|r| UntypedGrant {
        service: r[0],
        size_bits: r[1],
    }))
}

/// Encodes untyped grants (the SDK's side).
#[cfg(any(test, feature = "std"))]
#[must_use]
pub fn encode_untyped(grants: &[UntypedGrant]) -> std::vec::Vec<u8> {
    grants
        .iter()
        .flat_map(|g| [g.service, g.size_bits])
        .collect()
}

/// Encodes grants (the SDK's side).
#[cfg(any(test, feature = "std"))]
#[must_use]
pub fn encode(grants: &[Grant]) -> std::vec::Vec<u8> {
    grants.iter().flat_map(|g| [g.granter, g.target]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: decoding never panics, and what it accepts names only existing services,
        /// never one granting itself, and encodes back to the same bytes.
        #[test]
        fn decoding_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..160), services in 0usize..20) {
            if let Ok(grants) = decode(&bytes, services) {
                let grants: std::vec::Vec<Grant> = grants.collect();
                for g in &grants {
                    prop_assert!(usize::from(g.granter) < services && usize::from(g.target) < services);
                    prop_assert_ne!(g.granter, g.target);
                }
                prop_assert_eq!(&encode(&grants), &bytes);
            }
        }
    }

    #[test]
    fn untyped_pieces_round_trip_and_refusals() {
        let pieces: std::vec::Vec<UntypedGrant> =
            untyped_pieces(1, (1 << 20) + (1 << 12)).collect();
        assert_eq!(
            pieces,
            [
                UntypedGrant {
                    service: 1,
                    size_bits: 20
                },
                UntypedGrant {
                    service: 1,
                    size_bits: 12
                }
            ]
        );
        let bytes = encode_untyped(&pieces);
        let decoded: std::vec::Vec<UntypedGrant> = decode_untyped(&bytes, 2).unwrap().collect();
        assert_eq!(decoded, pieces);
        assert_eq!(
            decode_untyped(&bytes, 1).err(),
            Some(GrantError::NoSuchService(1))
        );
        assert_eq!(
            decode_untyped(&[0, 11], 1).err(),
            Some(GrantError::Size(11))
        );
        assert_eq!(
            decode_untyped(&[0, 48], 1).err(),
            Some(GrantError::Size(48))
        );
        assert_eq!(decode_untyped(&[0], 1).err(), Some(GrantError::Length));
    }

    #[test]
    fn round_trip_and_refusals() {
        let grants = [
            Grant {
                granter: 1,
                target: 0,
            },
            Grant {
                granter: 0,
                target: 2,
            },
        ];
        let bytes = encode(&grants);
        let decoded: std::vec::Vec<Grant> = decode(&bytes, 3).unwrap().collect();
        assert_eq!(decoded, grants);
        assert_eq!(decode(&bytes, 2).err(), Some(GrantError::NoSuchService(2)));
        assert_eq!(decode(&[1], 3).err(), Some(GrantError::Length));
        assert_eq!(decode(&[1, 1], 3).err(), Some(GrantError::SelfGrant(1)));
        assert_eq!(
            decode(&[0; 2 * (MAX_GRANTS + 1)], 3).err(),
            Some(GrantError::Length)
        );
    }
}
