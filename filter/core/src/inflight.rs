//! Requests in flight on one worker, per target, so slowness shows before the response.
//!
//! A request that has been waiting longer than the slow threshold is already a slow
//! response, whatever it finally answers. Counting it on the worker's next tick, instead of
//! when the answer arrives, makes a target that hangs degrade within one threshold plus
//! one tick. The request is marked, so its eventual response is not counted slow twice.

/// How long an unfinished request is remembered.
pub const FORGET_AFTER_MS: u64 = 600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    stream: u64,
    started_ms: u64,
    overdue: bool,
}

#[derive(Clone, Debug, Default)]
pub struct InFlight(Vec<Entry>);

impl InFlight {
    pub fn start(&mut self, stream: u64, now_ms: u64) {
        self.0.push(Entry { stream, started_ms: now_ms, overdue: false });
    }

    /// Forgets a finished stream; returns whether it had been counted overdue.
    pub fn finish(&mut self, stream: u64) -> bool {
        match self.0.iter().position(|e| e.stream == stream) {
            Some(i) => self.0.swap_remove(i).overdue,
            None => false,
        }
    }

    pub fn len(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Marks requests waiting longer than `threshold_ms`; returns how many were newly marked.
    /// Entries older than [`FORGET_AFTER_MS`] are dropped: a stream whose end was never
    /// reported must not count as in flight (and slow) forever.
    pub fn mark_overdue(&mut self, now_ms: u64, threshold_ms: u64) -> u32 {
        self.0.retain(|e| now_ms.saturating_sub(e.started_ms) < FORGET_AFTER_MS);
        let mut n = 0;
        for e in self.0.iter_mut().filter(|e| !e.overdue && now_ms.saturating_sub(e.started_ms) > threshold_ms) {
            e.overdue = true;
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_requests_are_counted_once() {
        let mut f = InFlight::default();
        f.start(1, 0);
        f.start(2, 100);
        assert_eq!(f.mark_overdue(150, 100), 1);
        assert_eq!(f.mark_overdue(160, 100), 0);
        assert_eq!(f.mark_overdue(250, 100), 1);
        assert_eq!(f.len(), 2);
        assert!(f.finish(1));
        assert!(!f.finish(7));
        f.start(3, 300);
        assert!(!f.finish(3));
        assert_eq!(f.len(), 1);
        // A stream never reported finished is forgotten eventually.
        assert_eq!(f.mark_overdue(FORGET_AFTER_MS + 200, 100), 0);
        assert!(f.is_empty());
    }
}
