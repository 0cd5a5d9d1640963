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

/// Where a request sits in its target's [`InFlight`], kept by the stream: finishing it
/// costs the same however many requests are in flight (the native module keeps one table
/// for every worker of the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

#[derive(Clone, Debug, Default)]
pub struct InFlight {
    slots: Vec<Option<Entry>>,
    /// Empty slots, reused before the table grows.
    free: Vec<u32>,
    len: u32,
}

impl InFlight {
    pub fn start(&mut self, stream: u64, now_ms: u64) -> Option<Slot> {
        let entry = Some(Entry { stream, started_ms: now_ms, overdue: false });
        let slot = match self.free.pop() {
            Some(i) => {
                *self.slots.get_mut(i as usize)? = entry;
                i
            }
            None => {
                let i = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(entry);
                i
            }
        };
        self.len = self.len.saturating_add(1);
        Some(Slot(slot))
    }

    /// Forgets a finished stream; returns whether it had been counted overdue. A slot that
    /// no longer holds `stream` (forgotten as too old, then reused) is left alone.
    pub fn finish(&mut self, slot: Slot, stream: u64) -> bool {
        let Some(cell) = self.slots.get_mut(slot.0 as usize) else { return false };
        match *cell {
            Some(e) if e.stream == stream => {
                *cell = None;
                self.free.push(slot.0);
                self.len = self.len.saturating_sub(1);
                e.overdue
            }
            _ => false,
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks requests waiting longer than `threshold_ms`; returns how many were newly marked.
    /// Entries older than [`FORGET_AFTER_MS`] are dropped: a stream whose end was never
    /// reported must not count as in flight (and slow) forever.
    pub fn mark_overdue(&mut self, now_ms: u64, threshold_ms: u64) -> u32 {
        let mut n = 0;
        for (i, cell) in self.slots.iter_mut().enumerate() {
            let Some(e) = cell else { continue };
            let waited = now_ms.saturating_sub(e.started_ms);
            if waited >= FORGET_AFTER_MS {
                *cell = None;
                self.free.push(i as u32);
                self.len = self.len.saturating_sub(1);
            } else if !e.overdue && waited > threshold_ms {
                e.overdue = true;
                n += 1;
            }
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
        let one = f.start(1, 0).unwrap();
        let two = f.start(2, 100).unwrap();
        assert_eq!(f.mark_overdue(150, 100), 1);
        assert_eq!(f.mark_overdue(160, 100), 0);
        assert_eq!(f.mark_overdue(250, 100), 1);
        assert_eq!(f.len(), 2);
        assert!(f.finish(one, 1));
        assert!(!f.finish(one, 1), "finished once");
        assert!(!f.finish(two, 7), "another stream's slot is left alone");
        let three = f.start(3, 300).unwrap();
        assert_eq!(three, one, "a free slot is reused");
        assert!(!f.finish(three, 3));
        assert_eq!(f.len(), 1);
        // A stream never reported finished is forgotten eventually.
        assert_eq!(f.mark_overdue(FORGET_AFTER_MS + 200, 100), 0);
        assert!(f.is_empty());
        assert!(!f.finish(two, 2), "forgotten: its late end changes nothing");
        let four = f.start(4, FORGET_AFTER_MS + 300).unwrap();
        assert!(!f.finish(four, 2), "a reused slot belongs to its new stream");
        assert_eq!(f.len(), 1);
    }
}
