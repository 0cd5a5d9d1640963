//! gRPC wire details the filter needs: status codes, by number and by name.

/// gRPC status codes (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Bytes before each gRPC message on the wire: a compressed flag and a `u32` length.
pub const FRAME_PREFIX: usize = 5;

impl Code {
    const NAMES: [(&'static str, Code); 17] = [
        ("OK", Code::Ok),
        ("CANCELLED", Code::Cancelled),
        ("UNKNOWN", Code::Unknown),
        ("INVALID_ARGUMENT", Code::InvalidArgument),
        ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
        ("NOT_FOUND", Code::NotFound),
        ("ALREADY_EXISTS", Code::AlreadyExists),
        ("PERMISSION_DENIED", Code::PermissionDenied),
        ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
        ("FAILED_PRECONDITION", Code::FailedPrecondition),
        ("ABORTED", Code::Aborted),
        ("OUT_OF_RANGE", Code::OutOfRange),
        ("UNIMPLEMENTED", Code::Unimplemented),
        ("INTERNAL", Code::Internal),
        ("UNAVAILABLE", Code::Unavailable),
        ("DATA_LOSS", Code::DataLoss),
        ("UNAUTHENTICATED", Code::Unauthenticated),
    ];

    pub fn from_u32(n: u32) -> Option<Code> {
        Self::NAMES.iter().map(|(_, c)| *c).find(|c| *c as u32 == n)
    }

    /// From a canonical name (`UNAVAILABLE`, case-insensitive).
    pub fn from_name(name: &str) -> Option<Code> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, c)| *c)
    }

    /// Every canonical name, in code order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::NAMES.iter().map(|(n, _)| *n)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, c)| *c == self).map_or("UNKNOWN", |(n, _)| n)
    }

    /// Reads a `grpc-status` header value.
    pub fn parse_status(value: &[u8]) -> Option<u32> {
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(Code::from_name("unavailable"), Some(Code::Unavailable));
        assert_eq!(Code::from_u32(14), Some(Code::Unavailable));
        assert_eq!(Code::from_u32(17), None);
        assert_eq!(Code::DeadlineExceeded.name(), "DEADLINE_EXCEEDED");
        assert_eq!(Code::parse_status(b"14"), Some(14));
        assert_eq!(Code::parse_status(b"x"), None);
    }
}
