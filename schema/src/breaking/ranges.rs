//! Inclusive number ranges (reserved ranges of messages and enums).

/// An inclusive range `[start, end]`.
pub(crate) type Span = (i64, i64);

/// Sorts and merges overlapping or adjacent ranges.
pub(crate) fn collapse(mut ranges: Vec<Span>) -> Vec<Span> {
    ranges.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The parts of `wanted` not covered by `collapsed` (the output of [`collapse`]).
pub(crate) fn missing(wanted: Span, collapsed: &[Span]) -> Vec<Span> {
    let (mut start, end) = wanted;
    let mut out = Vec::new();
    for &(s, e) in collapsed {
        if e < start {
            continue;
        }
        if s > end {
            break;
        }
        if s > start {
            out.push((start, s - 1));
        }
        start = e.saturating_add(1);
        if start > end {
            return out;
        }
    }
    if start <= end {
        out.push((start, end));
    }
    out
}

/// `[5]`, `[5,9]` or `[5,max]`.
pub(crate) fn describe(span: Span, max: i64) -> String {
    match span {
        (s, e) if s == e => format!("[{s}]"),
        (s, e) if e == max => format!("[{s},max]"),
        (s, e) => format!("[{s},{e}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parts() {
        let have = collapse(vec![(10, 12), (1, 3), (4, 5)]);
        assert_eq!(have, vec![(1, 5), (10, 12)]);
        assert_eq!(missing((2, 11), &have), vec![(6, 9)]);
        assert_eq!(missing((1, 5), &have), vec![]);
        assert_eq!(missing((0, 20), &have), vec![(0, 0), (6, 9), (13, 20)]);
        assert_eq!(missing((7, 8), &[]), vec![(7, 8)]);
    }
}
