//! Latency budgets: the request's deadline as the client sent it (`grpc-timeout`), and
//! what remains of it after the time already spent in the proxy.
//!
//! `grpc-timeout` is `TimeoutValue TimeoutUnit`: at most 8 ASCII digits, then one of
//! `H` (hours), `M` (minutes), `S`, `m`, `u`, `n` (seconds, milli-, micro-, nanoseconds).
//! A custom budget header may also carry bare digits, read as milliseconds.

use std::time::Duration;

/// Why a budget header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    Empty,
    /// More than 8 digits (the gRPC spec's limit).
    TooManyDigits,
    /// No digits, or a character that is neither digit nor unit.
    NotANumber,
    /// A unit letter other than `H M S m u n`, or none where one is required.
    BadUnit,
}

impl BudgetError {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetError::Empty => "empty",
            BudgetError::TooManyDigits => "more than 8 digits",
            BudgetError::NotANumber => "not a number",
            BudgetError::BadUnit => "unit is not one of H M S m u n",
        }
    }
}

/// Parses a `grpc-timeout` value. `bare_millis` accepts a value without unit as
/// milliseconds (custom headers only; the gRPC header always has a unit).
pub fn parse_timeout(value: &str, bare_millis: bool) -> Result<Duration, BudgetError> {
    let value = value.trim();
    let Some(last) = value.chars().last() else {
        return Err(BudgetError::Empty);
    };
    let (digits, unit): (&str, fn(u64) -> Duration) = if last.is_ascii_digit() {
        if !bare_millis {
            return Err(BudgetError::BadUnit);
        }
        (value, Duration::from_millis)
    } else {
        let unit: fn(u64) -> Duration = match last {
            'H' => |n| Duration::from_secs(n * 3600),
            'M' => |n| Duration::from_secs(n * 60),
            'S' => Duration::from_secs,
            'm' => Duration::from_millis,
            'u' => Duration::from_micros,
            'n' => Duration::from_nanos,
            _ => return Err(BudgetError::BadUnit),
        };
        (value.get(..value.len() - 1).unwrap_or(""), unit)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BudgetError::NotANumber);
    }
    if digits.len() > 8 {
        return Err(BudgetError::TooManyDigits);
    }
    // At most 8 digits, so even hours fit in u64 seconds.
    let n: u64 = digits.parse().map_err(|_| BudgetError::NotANumber)?;
    Ok(unit(n))
}

/// Formats a duration as a `grpc-timeout` value: the finest unit that fits in 8 digits,
/// rounding down (a forwarded budget must never grow).
pub fn format_timeout(d: Duration, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let nanos = d.as_nanos();
    for (unit, per) in [('n', 1u128), ('u', 1_000), ('m', 1_000_000), ('S', 1_000_000_000), ('M', 60_000_000_000), ('H', 3_600_000_000_000)] {
        let v = nanos / per;
        if v <= 99_999_999 {
            let _ = write!(out, "{v}{unit}");
            return;
        }
    }
    out.push_str("99999999H");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        let p = |s| parse_timeout(s, false);
        assert_eq!(p("1H"), Ok(Duration::from_secs(3600)));
        assert_eq!(p("2M"), Ok(Duration::from_secs(120)));
        assert_eq!(p("3S"), Ok(Duration::from_secs(3)));
        assert_eq!(p("250m"), Ok(Duration::from_millis(250)));
        assert_eq!(p("7u"), Ok(Duration::from_micros(7)));
        assert_eq!(p("99999999n"), Ok(Duration::from_nanos(99_999_999)));
        assert_eq!(p("0m"), Ok(Duration::ZERO));
        assert_eq!(p("99999999H"), Ok(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn malformed_values_are_errors_not_crashes() {
        let p = |s| parse_timeout(s, false);
        assert_eq!(p(""), Err(BudgetError::Empty));
        assert_eq!(p("123456789m"), Err(BudgetError::TooManyDigits));
        assert_eq!(p("m"), Err(BudgetError::NotANumber));
        assert_eq!(p("-5m"), Err(BudgetError::NotANumber));
        assert_eq!(p("1.5S"), Err(BudgetError::NotANumber));
        assert_eq!(p("10x"), Err(BudgetError::BadUnit));
        assert_eq!(p("100"), Err(BudgetError::BadUnit));
        assert_eq!(p("1é"), Err(BudgetError::BadUnit));
        assert_eq!(p("١٢m"), Err(BudgetError::NotANumber));
        assert_eq!(parse_timeout("100", true), Ok(Duration::from_millis(100)));
    }

    #[test]
    fn format_round_trips_and_never_grows() {
        let mut s = String::new();
        for d in [Duration::from_millis(1500), Duration::from_nanos(123), Duration::from_secs(86_400 * 400)] {
            format_timeout(d, &mut s);
            let back = parse_timeout(&s, false).unwrap();
            assert!(back <= d, "{s} grew {d:?}");
            assert!(d - back < d / 1000 + Duration::from_nanos(1), "{s} lost too much of {d:?}");
        }
        format_timeout(Duration::from_millis(1500), &mut s);
        assert_eq!(s, "1500000u");
    }
}
