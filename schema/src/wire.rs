//! Minimal protobuf wire-format reading, shared by descriptor canonicalisation and payload
//! validation.
//!
//! Both need more than a decoder gives: the canonical form rewrites a few fields of raw
//! descriptor bytes while keeping every other byte (custom options included), and the
//! validator must say *where* and *why* a payload is malformed instead of failing with one
//! opaque error. So this reads one field at a time and leaves interpretation to the caller.

/// The six wire types of the protobuf encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    StartGroup,
    EndGroup,
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u64) -> Option<Self> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::Fixed32,
            _ => return None,
        })
    }

    pub fn bits(self) -> u64 {
        match self {
            WireType::Varint => 0,
            WireType::Fixed64 => 1,
            WireType::Len => 2,
            WireType::StartGroup => 3,
            WireType::EndGroup => 4,
            WireType::Fixed32 => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "fixed64",
            WireType::Len => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::Fixed32 => "fixed32",
        }
    }
}

/// Why reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A varint longer than ten bytes.
    BadVarint,
    /// The input ended inside a field.
    Truncated,
    /// Field number 0 or above 2^29-1.
    InvalidTag,
    /// Wire type 6 or 7.
    InvalidWireType,
}

/// Reads a varint from `buf` at `*pos`, advancing it. Bits beyond 64 in a ten-byte varint
/// are dropped, as the C++, upb (Python) and Java runtimes do (Go refuses them): the
/// receiver accepts such a payload, so a gateway refusing it would refuse what the
/// service takes. Eleven bytes or more is malformed everywhere.
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&byte) = buf.get(*pos) else {
            return Err(WireError::Truncated);
        };
        *pos += 1;
        // In the tenth byte only the lowest bit fits: the shift drops the rest.
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::BadVarint)
}

pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a field key, returning `(number, wire type)`.
pub fn read_key(buf: &[u8], pos: &mut usize) -> Result<(u32, WireType), WireError> {
    let key = read_varint(buf, pos)?;
    let wire_type = WireType::from_bits(key & 7).ok_or(WireError::InvalidWireType)?;
    let number = key >> 3;
    if number == 0 || number > (1 << 29) - 1 {
        return Err(WireError::InvalidTag);
    }
    Ok((number as u32, wire_type))
}

/// Reads a length prefix and returns the range of the bytes it announces.
pub fn read_len(buf: &[u8], pos: &mut usize) -> Result<std::ops::Range<usize>, WireError> {
    let len = read_varint(buf, pos)?;
    let start = *pos;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .filter(|&end| end <= buf.len())
        .ok_or(WireError::Truncated)?;
    *pos = end;
    Ok(start..end)
}

/// Skips a fixed-width value of `n` bytes.
pub fn skip_fixed(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), WireError> {
    if buf.len() - *pos < n {
        *pos = buf.len();
        return Err(WireError::Truncated);
    }
    *pos += n;
    Ok(())
}

/// One top-level field of an encoded message, as raw bytes.
pub struct RawField<'a> {
    pub number: u32,
    pub wire_type: WireType,
    /// For `Len` fields, the payload without its length prefix; for the others, the value.
    pub value: &'a [u8],
    /// The whole field including key and length prefix, to copy it unchanged.
    pub whole: &'a [u8],
}

/// Splits an encoded message into its top-level fields. Groups are rejected: descriptors
/// never use them, and the validator has its own walker that handles them.
pub fn fields(buf: &[u8]) -> Result<Vec<RawField<'_>>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (number, wire_type) = read_key(buf, &mut pos)?;
        let value_start = pos;
        let value = match wire_type {
            WireType::Varint => {
                read_varint(buf, &mut pos)?;
                &buf[value_start..pos]
            }
            WireType::Fixed64 => {
                skip_fixed(buf, &mut pos, 8)?;
                &buf[value_start..pos]
            }
            WireType::Fixed32 => {
                skip_fixed(buf, &mut pos, 4)?;
                &buf[value_start..pos]
            }
            WireType::Len => {
                let range = read_len(buf, &mut pos)?;
                &buf[range]
            }
            WireType::StartGroup | WireType::EndGroup => return Err(WireError::InvalidWireType),
        };
        out.push(RawField {
            number,
            wire_type,
            value,
            whole: &buf[start..pos],
        });
    }
    Ok(out)
}

/// The last length-delimited field `number` among `fields`, as UTF-8 (singular fields:
/// the last occurrence wins).
pub(crate) fn last_str<'a>(fields: &[RawField<'a>], number: u32) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|f| f.number == number && f.wire_type == WireType::Len)
        .and_then(|f| std::str::from_utf8(f.value).ok())
}

/// The last varint field `number` among `fields`.
pub(crate) fn last_varint(fields: &[RawField<'_>], number: u32) -> Option<u64> {
    let f = fields.iter().rev().find(|f| f.number == number && f.wire_type == WireType::Varint)?;
    read_varint(f.value, &mut 0).ok()
}

/// Appends a length-delimited field.
pub fn write_len_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | WireType::Len.bits());
    write_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert_eq!(read_varint(&[0xff; 11], &mut pos), Err(WireError::BadVarint));
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80, 0x80], &mut pos), Err(WireError::Truncated));
        // Ten bytes with bits beyond 64: the low 64 bits, as C++ reads them.
        let mut over = vec![0xff; 9];
        over.push(0x7f);
        let mut pos = 0;
        assert_eq!(read_varint(&over, &mut pos), Ok(u64::MAX));
        assert_eq!(pos, 10);
        let mut pos = 0;
        assert_eq!(read_varint(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02], &mut pos), Ok(1));
    }
}
