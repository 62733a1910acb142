//! `stable_codes!`: error enums whose numeric codes are part of the ABI, checked at compile time.
//!
//! An error that crosses an address-space boundary travels as a number. The number of each variant is
//! written once, next to the variant (a constant expression: a literal, or another enum's `code()`
//! where two interfaces report one refusal, e.g. `BrokerError::CacheableDeviceUnsupported` is
//! `KernelError::CacheableDeviceUnsupported`'s number), and the macro derives everything else from
//! that one list: the `#[repr]` discriminants, `code()`, `from_code()`, the serde encoding (the
//! code, never postcard's declaration-order index; with the `postcard` feature, and not for
//! `@fixed` enums, which travel only in fixed layouts) and a `const` assertion that codes are
//! unique and non-zero (0 means "success" on the wire). Nothing is kept in sync by a comment
//! (STYLE.md 10 and 13).

/// Defines an enum of errors with stable, unique, non-zero numeric codes.
///
/// ```
/// capvisor_ipc::stable_codes! {
///     /// What went wrong.
///     pub enum MyError: u16 {
///         /// The thing was missing.
///         Missing = 1,
///         /// The thing was busy.
///         Busy = 2,
///     }
/// }
/// assert_eq!(MyError::Busy.code(), 2);
/// assert_eq!(MyError::from_code(1), Some(MyError::Missing));
/// assert_eq!(MyError::from_code(3), None);
/// ```
#[macro_export]
macro_rules! stable_codes {
    // Without serde: codes that travel only in fixed layouts (fault messages), so no build of
    // them, the kernel's included, carries a serde implementation.
    (
        @fixed
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $code ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[ $( Self::$variant ),+ ];

            /// The stable numeric code of this variant (never 0, which means success on the wire).
            #[must_use]
            pub const fn code(self) -> $repr {
                self as $repr
            }

            /// The variant with numeric code `code`, or `None` for an unknown code (a hostile or
            /// newer peer may send any number).
            #[must_use]
            pub const fn from_code(code: $repr) -> Option<Self> {
                $( if code == $code { return Some(Self::$variant); } )+
                None
            }

            /// The variant's name, for logs (a `'static` string: nothing is formatted at run time).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $( Self::$variant => stringify!($variant) ),+ }
            }
        }

        const _: () = {
            let all = $name::ALL;
            let mut i = 0;
            while i < all.len() {
                assert!(all[i].code() != 0, "code 0 is reserved for success");
                let mut j = i + 1;
                while j < all.len() {
                    assert!(all[i].code() != all[j].code(), "duplicate error code");
                    j += 1;
                }
                i += 1;
            }
        };

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl core::error::Error for $name {}
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:expr ),+ $(,)?
        }
    ) => {
        $crate::stable_codes! {
            @fixed
            $(#[$meta])*
            $vis enum $name : $repr {
                $( $(#[$vmeta])* $variant = $code ),+
            }
        }
        $crate::__stable_codes_serde!($name, $repr);
    };
}

/// The serde encoding of a [`stable_codes!`] enum: its code, never postcard's declaration index.
#[cfg(feature = "postcard")]
#[doc(hidden)]
#[macro_export]
macro_rules! __stable_codes_serde {
    ($name:ident, $repr:ident) => {
        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(
                &self,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                $crate::__serde::Serialize::serialize(&self.code(), serializer)
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let code = <$repr as $crate::__serde::Deserialize>::deserialize(deserializer)?;
                Self::from_code(code).ok_or_else(|| {
                    <D::Error as $crate::__serde::de::Error>::custom("unknown error code")
                })
            }
        }
    };
}

/// Without the `postcard` feature no serde encoding is made.
#[cfg(not(feature = "postcard"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __stable_codes_serde {
    ($name:ident, $repr:ident) => {};
}

#[cfg(test)]
mod tests {
    crate::stable_codes! {
        /// Test codes.
        pub enum Sample: u16 {
            /// A.
            A = 7,
            /// B.
            B = 300,
        }
    }

    #[test]
    #[cfg(feature = "postcard")]
    fn codes_round_trip_through_postcard_as_numbers() {
        let mut buf = [0u8; 8];
        let used = postcard::to_slice(&Sample::B, &mut buf).unwrap();
        // 300 as a postcard varint, not the declaration index 1.
        assert_eq!(used, &[0xac, 0x02]);
        assert_eq!(postcard::from_bytes::<Sample>(used).unwrap(), Sample::B);
        assert!(postcard::from_bytes::<Sample>(&[9]).is_err());
        assert_eq!(Sample::from_code(7), Some(Sample::A));
        assert_eq!(Sample::A.name(), "A");
    }
}
