//! gRPC framing: each message is preceded by a 5-byte prefix, a compressed-flag byte and a
//! big-endian `u32` length (gRPC over HTTP/2, "Length-Prefixed-Message").

use super::walker::Walker;
use super::{Policy, Validation, Violation, ViolationKind};
use prost_reflect::MessageDescriptor;

/// Bytes in a gRPC message prefix.
pub const GRPC_FRAME_HEADER: usize = 5;

/// Validates an HTTP/2 body holding one or more gRPC length-prefixed messages (one for
/// unary calls, several for client streaming).
///
/// Compressed frames (flag 1) are refused with a clear violation rather than passed
/// unchecked: the validator does not implement `grpc-encoding` codecs, so the caller
/// should validate after decompression or require identity encoding on validated routes.
pub fn validate_grpc_frames(descriptor: &MessageDescriptor, body: &[u8], policy: &Policy) -> Validation {
    let mut out = Validation::default();
    let mut pos = 0;
    let mut frame = 0;
    let bad = |out: &mut Validation, kind, offset, frame, message: String| {
        out.violations.push(Violation {
            kind,
            path: String::new(),
            offset,
            frame: Some(frame),
            message,
        });
    };
    if body.is_empty() {
        bad(&mut out, ViolationKind::BadFrame, 0, 0, "empty body: a gRPC request carries at least one 5-byte frame prefix".into());
        return out;
    }
    while pos < body.len() {
        let rest = &body[pos..];
        if rest.len() < GRPC_FRAME_HEADER {
            bad(
                &mut out,
                ViolationKind::BadFrame,
                pos,
                frame,
                format!("frame prefix truncated: {} of {GRPC_FRAME_HEADER} bytes", rest.len()),
            );
            break;
        }
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let available = rest.len() - GRPC_FRAME_HEADER;
        match flag {
            0 => {}
            1 => {
                bad(
                    &mut out,
                    ViolationKind::CompressedFrame,
                    pos,
                    frame,
                    "compressed gRPC frame (flag 1): its grpc-encoding cannot be decoded here, so it \
                     cannot be validated; send it uncompressed (grpc-encoding: identity)"
                        .into(),
                );
            }
            other => {
                bad(
                    &mut out,
                    ViolationKind::BadFrame,
                    pos,
                    frame,
                    format!("invalid compressed-flag byte {other:#04x} (must be 0 or 1)"),
                );
                break;
            }
        }
        if len > policy.max_bytes {
            bad(
                &mut out,
                ViolationKind::TooLarge,
                pos,
                frame,
                format!("frame announces {len} bytes; the limit is {}", policy.max_bytes),
            );
            break;
        }
        if len > available {
            bad(
                &mut out,
                ViolationKind::BadFrame,
                pos,
                frame,
                format!("frame prefix announces {len} bytes but only {available} follow"),
            );
            break;
        }
        let start = pos + GRPC_FRAME_HEADER;
        if flag == 0 {
            Walker::new(policy, &mut out)
                .in_frame(frame, start)
                .message(descriptor, &body[start..start + len]);
        }
        pos = start + len;
        frame += 1;
    }
    out
}
