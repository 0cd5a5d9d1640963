//! `sidecar_admin_json`: the body of `POST /v1/chaos` (a [`Fault`]), read and checked as the
//! admin handler does (`serde_json::from_slice`, then `Fault::validate`) before any fault is
//! set.
//!
//! A fault in force decides what share of real requests fail: one that passes validation
//! must have sane values, and act as its values say.

use switchyard_sidecar::chaos::{parse_code, Fault};

pub fn admin_json(data: &[u8]) {
    let fault: Fault = match serde_json::from_slice(data) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refused body without a reason");
            return;
        }
    };
    let verdict = fault.validate();
    // Written back (as the handler answers) and read again, it is the same fault.
    let written = serde_json::to_vec(&fault).unwrap_or_else(|e| panic!("a fault that does not serialise: {e}"));
    let reread: Fault = serde_json::from_slice(&written).unwrap_or_else(|e| panic!("the handler's answer does not read back: {e}"));
    // The verdict and the field it names; not the message, which quotes `error_rate`, and
    // serde_json (without `float_roundtrip`) may read a long decimal back one ulp off.
    let field = |v: &Result<(), String>| v.as_ref().err().and_then(|e| e.split('`').nth(1).map(str::to_owned));
    assert_eq!(field(&reread.validate()), field(&verdict), "validation changes when the fault is written and read back: {verdict:?}");
    assert_eq!(reread.validate().is_ok(), verdict.is_ok(), "validation changes when the fault is written and read back: {verdict:?}");
    assert_eq!((&reread.target, reread.latency_ms, &reread.error_code, reread.unhealthy), (&fault.target, fault.latency_ms, &fault.error_code, fault.unhealthy));
    assert!(
        reread.error_rate == fault.error_rate || (reread.error_rate - fault.error_rate).abs() <= 2.0 * f64::EPSILON * fault.error_rate.abs(),
        "error_rate {} reads back as {}",
        fault.error_rate,
        reread.error_rate
    );

    let Err(why) = verdict else {
        sane(&fault);
        return;
    };
    let named = ["`error_rate`", "`latency_ms`", "`error_code`"].iter().any(|k| why.contains(k));
    assert!(named, "a refused fault that names no field: {why}");
}

/// An accepted fault: a share in 0..=1, a bounded delay, a real error status; it fails
/// no request at rate 0 and every request at rate 1, with its own status.
fn sane(fault: &Fault) {
    assert!((0.0..=1.0).contains(&fault.error_rate), "accepted error_rate {}", fault.error_rate);
    assert!(fault.latency_ms <= 600_000, "accepted latency_ms {}", fault.latency_ms);
    let code = parse_code(&fault.error_code);
    assert!(code.is_some_and(|c| c != tonic::Code::Ok), "accepted error_code {:?}", fault.error_code);
    if fault.error_rate == 0.0 {
        assert!(fault.roll_error().is_none(), "a fault at rate 0 failed a request");
    }
    if fault.error_rate == 1.0 {
        let status = fault.roll_error().unwrap_or_else(|| panic!("a fault at rate 1 let a request through"));
        assert_eq!(Some(status.code()), code, "injected another status than {:?}", fault.error_code);
    }
}
