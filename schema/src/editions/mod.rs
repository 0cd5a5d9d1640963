//! Protobuf editions (`edition = "2023"`).
//!
//! Neither protox 0.10 nor prost-reflect 0.16 knows editions: the parser stops at the
//! `edition` keyword and the descriptor pool refuses `syntax = "editions"`. Rather than fork
//! either, an editions file is *lowered* to the proto2 file that means the same on the wire
//! and to the checker, and *raised* back wherever descriptors leave the crate:
//!
//! - [`source`] (with `runtime`) rewrites the text so protox parses it as proto2 — the
//!   `edition` line becomes a `syntax` line, label-less fields get `optional` — keeping every
//!   position, so errors and findings point into the file as written;
//! - [`lowering`] turns an editions `FileDescriptorProto` (as protoc or `buf build` write it)
//!   into proto2 the pool accepts: the edition's defaults and the file's own `features` go into
//!   the file options in full, `LEGACY_REQUIRED` becomes `required` and `DELIMITED` a group,
//!   which is what those features mean on the wire. [`lowering::raise_set`] undoes it;
//! - [`Features`] resolves any element's features from there, for proto2 and proto3 files as
//!   well, so the breaking rules and the validator ask one question whatever the syntax:
//!   presence, closed enums, UTF-8 validation, JSON format.
//!
//! Edition 2023 is supported; any other edition is refused with its name.

#[cfg(feature = "runtime")]
pub(crate) mod descriptor;
#[cfg(feature = "runtime")]
pub(crate) mod language;
mod features;
pub(crate) mod lowering;
#[cfg(feature = "runtime")]
pub(crate) mod source;

pub use features::{extension_has_presence, has_presence, is_editions_file, Features};
pub(crate) use features::{ALLOW, CLOSED, DELIMITED, EXPLICIT, IMPLICIT, LEGACY_REQUIRED, VERIFY};
pub use lowering::LoweringError;

/// An encoded `FileDescriptorSet` as `prost_reflect::DescriptorPool::decode` accepts it:
/// editions files lowered to proto2 (borrowed unchanged when there are none). For hosts that
/// build a pool without a [`crate::Schema`], such as the filter.
pub fn lowered_for_pool(encoded: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, LoweringError> {
    lowering::lower_set(encoded).map(|l| l.bytes)
}

/// An edition this crate can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edition {
    E2023,
}

impl Edition {
    /// `google.protobuf.Edition` number.
    pub fn number(self) -> i32 {
        match self {
            Edition::E2023 => 1000,
        }
    }

    pub fn from_number(number: i32) -> Option<Edition> {
        match number {
            1000 => Some(Edition::E2023),
            _ => None,
        }
    }

    /// As written in `edition = "…"`.
    pub fn name(self) -> &'static str {
        match self {
            Edition::E2023 => "2023",
        }
    }

    pub fn from_name(name: &str) -> Option<Edition> {
        match name {
            "2023" => Some(Edition::E2023),
            _ => None,
        }
    }

    pub fn defaults(self) -> Features {
        match self {
            Edition::E2023 => Features::EDITION_2023,
        }
    }
}

/// The editions this crate loads, for error messages.
pub(crate) const SUPPORTED: &str = "\"2023\"";

/// Names an edition number the way descriptor.proto does, for error messages.
pub(crate) fn edition_number_name(number: i32) -> String {
    match number {
        998 => "EDITION_PROTO2".into(),
        999 => "EDITION_PROTO3".into(),
        1000 => "EDITION_2023".into(),
        1001 => "EDITION_2024".into(),
        n => format!("edition number {n}"),
    }
}
