//! `schema_frames`: the two framings in front of a payload.
//!
//! - gRPC's length-prefixed messages (`validate_grpc_frames`), which both the filter (on
//!   the buffered request body, `ValidateMode::Filter`) and the sidecar's `/v1/validate`
//!   split before validating each message. The filter has no splitter of its own.
//! - Confluent's record framing (`framing::parse`: magic byte, schema id, message indexes),
//!   which `/v1/validate/confluent` splits.
//!
//! Both are checked against a splitter written here from the specification: the frames
//! found must tile the input, and each frame's problems must be the message validator's,
//! moved to the frame's position.

use super::schemas;
use switchyard_schema::framing::{self, FrameError};
use switchyard_schema::validate::{validate_grpc_frames, validate_message, Policy, Validation, Violation, ViolationKind, GRPC_FRAME_HEADER};

/// The first byte picks the message type ([`schemas::pick`]) and, by its top bit, a cap
/// small enough to be hit; the rest is the body.
pub fn frames(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    let message = schemas::pick(selector);
    let policy = if selector & 0x80 != 0 { Policy { max_bytes: 24, ..Policy::default() } } else { Policy::default() };
    let got = validate_grpc_frames(message, body, &policy);
    let (expected, consumed) = grpc_reference(body, |frame, start, payload| {
        let mut v = validate_message(message, payload, &policy);
        for x in v.violations.iter_mut().chain(v.warnings.iter_mut()) {
            x.offset += start;
            x.frame = Some(frame);
        }
        v
    }, &policy);
    let at = |v: &Validation| -> Vec<_> {
        let all = v.violations.iter().map(|x| (true, x)).chain(v.warnings.iter().map(|x| (false, x)));
        all.map(|(violation, x)| (violation, x.kind, x.path.clone(), x.offset, x.frame)).collect()
    };
    assert_eq!(
        at(&got),
        at(&expected),
        "{}: the frame validator disagrees with splitting by hand ({consumed} of {} bytes in whole frames)",
        message.full_name(),
        body.len()
    );
    for (x, want) in got.violations.iter().chain(&got.warnings).zip(expected.violations.iter().chain(&expected.warnings)) {
        // A frame's own problems read as the message validator's; the framing's say what is wrong.
        assert!(want.message.is_empty() || x.message == want.message, "{x} is not the message validator's {want}");
        assert!(!x.message.is_empty(), "a violation without a message at byte {}", x.offset);
    }
    confluent(body);
}

/// Splits `body` into gRPC frames by the specification, validating each whole,
/// uncompressed one with `validate`. Returns what the frame validator should report and
/// how many bytes the whole frames cover.
fn grpc_reference(body: &[u8], validate: impl Fn(usize, usize, &[u8]) -> Validation, policy: &Policy) -> (Validation, usize) {
    let mut out = Validation::default();
    let bad = |kind, offset, frame| Violation { kind, path: String::new(), offset, frame: Some(frame), message: String::new() };
    let mut frames: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    if body.is_empty() {
        out.violations.push(bad(ViolationKind::BadFrame, 0, 0));
    }
    while pos < body.len() {
        let frame = frames.len();
        let Some(prefix) = body.get(pos..pos + GRPC_FRAME_HEADER) else {
            out.violations.push(bad(ViolationKind::BadFrame, pos, frame));
            break;
        };
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        match prefix[0] {
            0 => {}
            1 => out.violations.push(bad(ViolationKind::CompressedFrame, pos, frame)),
            _ => {
                out.violations.push(bad(ViolationKind::BadFrame, pos, frame));
                break;
            }
        }
        if len > policy.max_bytes {
            out.violations.push(bad(ViolationKind::TooLarge, pos, frame));
            break;
        }
        let start = pos + GRPC_FRAME_HEADER;
        let Some(payload) = body.get(start..start + len) else {
            out.violations.push(bad(ViolationKind::BadFrame, pos, frame));
            break;
        };
        if prefix[0] == 0 {
            let v = validate(frame, start, payload);
            out.violations.extend(v.violations);
            out.warnings.extend(v.warnings);
        }
        frames.push(&body[pos..start + len]);
        pos = start + len;
    }
    // The frames tile the input from its start: together they are the prefix they cover.
    let consumed: usize = frames.iter().map(|f| f.len()).sum();
    assert_eq!(frames.concat(), body[..consumed], "frames do not reassemble into the body");
    (out, consumed)
}

/// Confluent framing: a record splits into a header and the payload, the payload is the
/// record's tail, and the header re-encoded (canonically) in front of it splits the same.
fn confluent(record: &[u8]) {
    match framing::parse(record) {
        Ok(frame) => {
            assert!(record.ends_with(frame.payload), "the payload is not the record's tail");
            assert!(!frame.message_indexes.is_empty(), "no message index: {frame:?}");
            let header_len = record.len() - frame.payload.len();
            assert_eq!(u32::from_be_bytes([record[1], record[2], record[3], record[4]]), frame.schema_id);
            let mut again = vec![framing::MAGIC];
            again.extend(frame.schema_id.to_be_bytes());
            if frame.message_indexes == [0] {
                again.push(0);
            } else {
                zigzag(frame.message_indexes.len() as i64, &mut again);
                for &i in &frame.message_indexes {
                    zigzag(i as i64, &mut again);
                }
            }
            assert!(again.len() <= header_len, "a canonical header longer than the one read: {again:?} vs {:?}", &record[..header_len]);
            again.extend_from_slice(frame.payload);
            let reparsed = framing::parse(&again).unwrap_or_else(|e| panic!("the re-encoded record {again:?} does not parse: {e}"));
            assert_eq!(reparsed, framing::Frame { payload: frame.payload, ..frame.clone() });
        }
        Err(FrameError::Short(n)) => assert!(n < 5 && n == record.len()),
        Err(FrameError::Magic(b)) => assert!(record.len() >= 5 && b == record[0] && b != framing::MAGIC),
        Err(FrameError::BadVarint(at)) => assert!((5..=record.len()).contains(&at), "a bad varint at {at} in {} bytes", record.len()),
        Err(FrameError::Count(n)) => assert!(!(0..=100).contains(&n)),
        Err(FrameError::Index(n)) => assert!(n < 0),
    }
}

fn zigzag(value: i64, out: &mut Vec<u8>) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
