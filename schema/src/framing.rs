//! Confluent's wire framing of a protobuf record (what its serializers write into Kafka):
//!
//! ```text
//! 0x00 | schema id: u32 big-endian | message indexes | serialized message
//! ```
//!
//! The message indexes locate the record's type in the schema's file: zigzag varints, a
//! count and then that many indexes — top-level message, then nested message within it, and
//! so on. The common case `[0]` (the file's first message) is written as a single `0`.

use prost_reflect::{FileDescriptor, MessageDescriptor};
use std::fmt;

/// The only magic byte Confluent's id framing uses (`1` frames a 16-byte GUID instead).
pub const MAGIC: u8 = 0;
/// More nesting than any real schema has; bounds what a hostile count can make us read.
const MAX_INDEXES: i64 = 100;

/// A framed record, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub schema_id: u32,
    pub message_indexes: Vec<usize>,
    /// The serialized message.
    pub payload: &'a [u8],
}

/// Why bytes are not a Confluent-framed protobuf record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than the 5 header bytes.
    Short(usize),
    /// The first byte is not [`MAGIC`].
    Magic(u8),
    /// A message-index varint is cut off or longer than 10 bytes, at this byte offset.
    BadVarint(usize),
    /// The index count is negative or implausibly large.
    Count(i64),
    /// An index is negative.
    Index(i64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "{n} bytes: shorter than the 5-byte Confluent header (magic byte, schema id)"),
            FrameError::Magic(b) => write!(f, "first byte is {b:#04x}, not the Confluent magic byte 0x00"),
            FrameError::BadVarint(at) => write!(f, "message-index varint at byte {at} is truncated or over 10 bytes"),
            FrameError::Count(n) => write!(f, "message-index count {n} is not in 0..={MAX_INDEXES}"),
            FrameError::Index(n) => write!(f, "message index {n} is negative"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits a framed record.
pub fn parse(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < 5 {
        return Err(FrameError::Short(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(FrameError::Magic(bytes[0]));
    }
    let schema_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let mut at = 5;
    let count = zigzag(bytes, &mut at)?;
    if !(0..=MAX_INDEXES).contains(&count) {
        return Err(FrameError::Count(count));
    }
    let message_indexes = if count == 0 {
        vec![0]
    } else {
        let mut indexes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let index = zigzag(bytes, &mut at)?;
            indexes.push(usize::try_from(index).map_err(|_| FrameError::Index(index))?);
        }
        indexes
    };
    Ok(Frame {
        schema_id,
        message_indexes,
        payload: &bytes[at..],
    })
}

fn zigzag(bytes: &[u8], at: &mut usize) -> Result<i64, FrameError> {
    let start = *at;
    let mut value: u64 = 0;
    for shift in 0..10 {
        let byte = *bytes.get(*at).ok_or(FrameError::BadVarint(start))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (shift * 7);
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(FrameError::BadVarint(start))
}

/// The message type the indexes name in `file`: its top-level messages, then nested ones
/// (in declaration order, as protobuf runtimes list them).
pub fn message_at(file: &FileDescriptor, indexes: &[usize]) -> Option<MessageDescriptor> {
    let (first, rest) = indexes.split_first()?;
    let mut message = file.messages().nth(*first)?;
    for index in rest {
        let child = message.child_messages().nth(*index)?;
        message = child;
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_short_and_the_long_index_forms() {
        // [0] as the single byte 0.
        let f = parse(&[0, 0, 0, 1, 2, 0, 0x08, 0x01]).unwrap();
        assert_eq!((f.schema_id, f.message_indexes.clone(), f.payload), (258, vec![0], &[0x08, 0x01][..]));
        // [1, 2]: count 2 (zigzag 4), 1 (2), 2 (4).
        let f = parse(&[0, 0, 0, 0, 7, 4, 2, 4, 0xAA]).unwrap();
        assert_eq!((f.schema_id, f.message_indexes.clone(), f.payload), (7, vec![1, 2], &[0xAA][..]));
        // An empty message after the header is a valid (empty) payload.
        assert_eq!(parse(&[0, 0, 0, 0, 1, 0]).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn refuses_what_is_not_framed() {
        assert_eq!(parse(&[0, 0, 1]), Err(FrameError::Short(3)));
        assert_eq!(parse(&[1, 0, 0, 0, 1, 0]), Err(FrameError::Magic(1)));
        assert_eq!(parse(&[0, 0, 0, 0, 1]), Err(FrameError::BadVarint(5)), "no index array");
        assert_eq!(parse(&[0, 0, 0, 0, 1, 4, 2]), Err(FrameError::BadVarint(7)), "count 2, one index");
        assert_eq!(parse(&[0, 0, 0, 0, 1, 3]), Err(FrameError::Count(-2)));
        assert_eq!(parse(&[0, 0, 0, 0, 1, 2, 1]), Err(FrameError::Index(-1)));
        assert_eq!(parse(&[0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(FrameError::BadVarint(5)));
    }
}
