//! Deduplication by `event_id` with bounded memory.
//!
//! The contract: an event id, once applied, is never applied again, however
//! late the duplicate arrives (a week, a restart later). Keeping every id
//! ever applied in memory would grow without bound, so each worker keeps a
//! *horizon* in event time:
//!
//! - the memory holds every applied id (with its content fingerprint) whose
//!   `occurred_at` is at or after `cutoff = newest occurred_at seen - horizon`;
//!   for an event at or after the cutoff, memory is authoritative;
//! - an event older than the cutoff (a late event, or a late duplicate) is
//!   looked up in the database's applied ids (`events_log`, unique per
//!   applied `event_id`), in one batched query per epoch, through the
//!   [`AppliedLookup`] the driver provides; this crate never sees the
//!   database itself;
//! - on start, the driver loads the applied ids inside the horizon from the
//!   database ([`DedupState::preload`]), so a restart loses nothing.
//!
//! Memory is thus bounded by the traffic inside the horizon, not by the
//! number of events ever seen. Most traffic is recent, so lookups are rare.
//!
//! Beyond the history held: `stockflow archive` drops the oldest days of
//! the log, and with them their ids. An event older than the horizon whose
//! id is not in the held history is new; if its `occurred_at` is before
//! the first instant held ([`AppliedLookup::held_from`]) it might repeat
//! an archived event, which nothing can tell any more: it is applied, and
//! counted (`GraphStats::dedup_beyond_history`, the metric
//! `stockflow_dedup_beyond_history_total`, a warning) so that an operator
//! can check it against the archive. Exactly-once holds for everything
//! still held; ARCHITECTURE.md ("History at scale") states the rule.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};

/// Looks up applied event ids older than the horizon.
pub trait AppliedLookup {
    /// For each of `ids` that was applied, its content fingerprint. An
    /// error holds the epoch back: it is never decided without the answer.
    ///
    /// `occurred_since` is the earliest `occurred_at` among the events
    /// asked about: a store kept by commit time need only search what was
    /// committed since shortly before it (a copy of an event carries its
    /// `occurred_at`, and an event is not committed before it occurred,
    /// give or take the producers' clocks).
    fn applied(
        &mut self,
        ids: &[String],
        occurred_since: DateTime<Utc>,
    ) -> Result<HashMap<String, u128>, LookupError>;

    /// The first instant of commit time the store still holds, as of the
    /// last [`AppliedLookup::applied`] (`None`: it holds every event ever
    /// applied). Older events were archived: their ids are no longer known.
    fn held_from(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// Why a lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The process is stopping and the store was away: nothing is wrong.
    #[error("stopped while waiting for the applied-id store")]
    Interrupted,
    /// The store refused (a broken schema, no privilege, ...).
    #[error("{0}")]
    Failed(String),
}

/// A lookup that knows nothing (in-memory runs and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLookup;

impl AppliedLookup for NoLookup {
    fn applied(
        &mut self,
        _ids: &[String],
        _occurred_since: DateTime<Utc>,
    ) -> Result<HashMap<String, u128>, LookupError> {
        Ok(HashMap::new())
    }
}

/// What the dedup state says about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never applied: apply it.
    New,
    /// Applied with the same content: a plain duplicate.
    Same,
    /// Applied with other content: a conflicting duplicate.
    Conflict,
}

/// The key an id is remembered by: the 128-bit XXH3 hash of its UTF-8
/// bytes. Holding 16 bytes instead of the id's text (up to 128 code points,
/// on the heap) is what keeps a worker's memory small: an id costs 57 bytes
/// (a 32-byte map entry and its control byte, a 24-byte eviction-queue
/// entry), up to about twice that just after the map or the queue grew.
/// Two distinct ids collide with a probability of about `n² / 2¹²⁹`: for a
/// billion ids inside one horizon, 1.5 × 10⁻²¹.
pub type IdKey = u128;

/// The [`IdKey`] of an event id.
pub fn id_key(event_id: &str) -> IdKey {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

/// A fast hasher for keys that are already well-mixed hashes.
type Fast = foldhash::fast::FixedState;

/// One worker's share of the applied ids inside the horizon.
#[derive(Debug)]
pub struct DedupState {
    horizon: Duration,
    /// id -> (low 64 bits of the content fingerprint, epoch applied in;
    /// 0 = an earlier run). 32 bytes an entry. Two contents of one id are
    /// told apart unless their fingerprints agree in 64 bits (2⁻⁶⁴).
    ids: HashMap<IdKey, (u64, u64), Fast>,
    /// (Unix second of event time, id) in the order ids were remembered:
    /// eviction pops from the front. Events come roughly in time order; an
    /// older one behind a newer one just stays a little longer. Every id
    /// that leaves has a time before the cutoff or at or before the floor,
    /// so memory never claims to cover an id it let go of.
    order: VecDeque<(i64, [u64; 2])>,
    newest: Option<DateTime<Utc>>,
    /// `newest - horizon`, kept with `newest`.
    cutoff: Option<DateTime<Utc>>,
    /// At most this many ids in `ids`; beyond it the oldest seconds leave early.
    max_ids: usize,
    /// Events at or before this instant are not covered (set when the id
    /// cap, not the horizon, made memory let go of them).
    floor: Option<DateTime<Utc>>,
    /// Applied ids older than the cutoff whose epoch may not be committed
    /// yet: the database cannot answer for them, so memory must, until the
    /// commit of their epoch is known.
    late: HashMap<IdKey, (u64, u64), Fast>,
}

impl DedupState {
    /// An empty state with the given horizon, holding at most `max_ids` ids
    /// (the oldest leave first, and are looked up in the database after).
    pub fn new(horizon: Duration, max_ids: usize) -> Self {
        DedupState {
            horizon,
            max_ids: max_ids.max(1),
            floor: None,
            ids: HashMap::default(),
            order: VecDeque::new(),
            newest: None,
            cutoff: None,
            late: HashMap::default(),
        }
    }

    /// Ids in memory.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is in memory.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Events before this instant are not covered by memory.
    pub fn cutoff(&self) -> Option<DateTime<Utc>> {
        self.cutoff
    }

    /// Whether memory alone can answer for an event at `at`.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.cutoff.is_none_or(|c| at >= c) && self.floor.is_none_or(|f| at > f)
    }

    fn see_time(&mut self, at: DateTime<Utc>) {
        if self.newest.is_none_or(|n| at > n) {
            self.newest = Some(at);
            self.cutoff = at.checked_sub_signed(self.horizon);
        }
    }

    /// Declares that memory cannot answer for events at or before `at`
    /// (the start-up load was cut short there).
    pub fn raise_floor(&mut self, at: DateTime<Utc>) {
        self.floor = Some(self.floor.map_or(at, |f| f.max(at)));
    }

    /// Loads an id applied in an earlier run.
    pub fn preload(&mut self, id: IdKey, hash: u128, at: DateTime<Utc>) {
        self.record(id, hash, at, 0);
    }

    /// Answers from memory: for an event memory covers, or a late one
    /// applied in an epoch that may not be committed yet.
    pub fn check(&self, id: IdKey, hash: u128) -> Seen {
        match self.ids.get(&id).or_else(|| self.late.get(&id)) {
            None => Seen::New,
            Some((h, _)) if *h == hash as u64 => Seen::Same,
            Some(_) => Seen::Conflict,
        }
    }

    /// Remembers an event applied in `epoch` and moves the horizon.
    pub fn record_applied(&mut self, id: IdKey, hash: u128, at: DateTime<Utc>, epoch: u64) {
        if !self.covers(at) {
            self.late.insert(id, (hash as u64, epoch));
            return;
        }
        self.record(id, hash, at, epoch);
    }

    /// Decides an event that passed the reference checks and, when it is
    /// new, remembers it as applied in `epoch`. `stored` is the fingerprint
    /// the database holds for the id, when it was looked up (events memory
    /// does not cover). The common case (a covered event, nothing late,
    /// nothing from the database) costs one hash-table lookup.
    pub fn admit(
        &mut self,
        id: IdKey,
        hash: u128,
        at: DateTime<Utc>,
        epoch: u64,
        stored: Option<u128>,
    ) -> Seen {
        let verdict = |h: u64| if h == hash as u64 { Seen::Same } else { Seen::Conflict };
        if stored.is_none() && self.late.is_empty() && self.covers(at) {
            return match self.ids.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => verdict(e.get().0),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((hash as u64, epoch));
                    self.see_time(at);
                    self.order.push_back((at.timestamp(), split(id)));
                    Seen::New
                }
            };
        }
        let seen = match (self.check(id, hash), stored) {
            (Seen::New, Some(h)) => verdict(h as u64),
            (seen, _) => seen,
        };
        if seen == Seen::New {
            self.record_applied(id, hash, at, epoch);
        }
        seen
    }

    fn record(&mut self, id: IdKey, hash: u128, at: DateTime<Utc>, epoch: u64) {
        self.see_time(at);
        if self.covers(at) {
            self.order.push_back((at.timestamp(), split(id)));
            self.ids.insert(id, (hash as u64, epoch));
        } else if epoch > 0 {
            self.late.insert(id, (hash as u64, epoch));
        }
    }

    /// Forgets late ids whose epoch is committed (the database answers for them now).
    pub fn committed(&mut self, epoch: u64) {
        if !self.late.is_empty() {
            self.late.retain(|_, (_, e)| *e > epoch);
        }
    }

    /// Late ids waiting for their commit.
    pub fn late_len(&self) -> usize {
        self.late.len()
    }

    /// Forgets ids that fell behind the horizon (by whole seconds of event
    /// time: an id may stay up to a second longer, and memory still answers
    /// truly for it), except those applied in an epoch not yet known to be
    /// committed (the database cannot answer for them yet): those wait in
    /// the late map for [`DedupState::committed`].
    pub fn evict(&mut self, committed_epoch: u64) {
        if let Some(cutoff) = self.cutoff {
            let second = cutoff.timestamp();
            while self.order.front().is_some_and(|(s, _)| *s < second) {
                self.pop_oldest(committed_epoch);
            }
        }
        // The id cap: the oldest leave until memory fits, and memory stops
        // covering their second.
        while self.ids.len() > self.max_ids {
            let Some(second) = self.pop_oldest(committed_epoch) else { break };
            let end_of_second = DateTime::from_timestamp(second + 1, 0)
                .map(|t| t - Duration::nanoseconds(1))
                .unwrap_or_default();
            self.raise_floor(end_of_second);
        }
    }

    /// Lets go of the id remembered first; returns its second.
    fn pop_oldest(&mut self, committed_epoch: u64) -> Option<i64> {
        let (second, [hi, lo]) = self.order.pop_front()?;
        let id = (u128::from(hi) << 64) | u128::from(lo);
        if let Some((hash, epoch)) = self.ids.remove(&id)
            && epoch > committed_epoch
        {
            self.late.insert(id, (hash, epoch));
        }
        Some(second)
    }
}

fn split(id: IdKey) -> [u64; 2] {
    [(id >> 64) as u64, id as u64]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_cap_bounds_memory_and_moves_the_floor() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).expect("ts");
        let mut d = DedupState::new(Duration::hours(48), 100);
        for i in 0..1_000 {
            d.record_applied(id_key(&format!("e{i}")), i as u128, t(i), 1);
            d.evict(1);
        }
        assert!(d.len() <= 100, "{}", d.len());
        assert!(!d.covers(t(10)), "evicted by the cap: the database answers");
        assert!(d.covers(t(999)));
        assert_eq!(d.check(id_key("e999"), 999), Seen::Same);
        assert_eq!(d.late_len(), 0, "everything evicted was committed");
    }

    #[test]
    fn out_of_order_ids_never_leave_while_memory_covers_them() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).expect("ts");
        let mut d = DedupState::new(Duration::hours(48), 10);
        let seconds = [50, 10, 60, 20, 70, 30, 80, 40, 90, 5, 100, 15, 110, 25, 120, 35];
        for (i, s) in seconds.iter().enumerate() {
            assert_eq!(d.admit(id_key(&format!("x{i}")), i as u128, at(*s), 1, None), Seen::New);
            d.evict(1);
            assert!(d.len() <= 10);
            for (j, s) in seconds.iter().enumerate().take(i + 1) {
                let remembered = d.check(id_key(&format!("x{j}")), j as u128) == Seen::Same;
                assert!(remembered || !d.covers(at(*s)), "x{j} at {s} left memory but is still covered");
            }
        }
    }

    #[test]
    fn admit_decides_and_remembers_in_one_step() {
        let mut d = DedupState::new(Duration::hours(24), 1_000);
        assert_eq!(d.admit(id_key("a"), 1, t(100), 1, None), Seen::New);
        assert_eq!(d.admit(id_key("a"), 1, t(100), 2, None), Seen::Same);
        assert_eq!(d.admit(id_key("a"), 2, t(100), 2, None), Seen::Conflict);
        // Older than the horizon: the database's answer decides.
        assert!(!d.covers(t(10)));
        assert_eq!(d.admit(id_key("old"), 5, t(10), 3, Some(5)), Seen::Same);
        assert_eq!(d.admit(id_key("old2"), 5, t(10), 3, Some(6)), Seen::Conflict);
        assert_eq!(d.admit(id_key("old3"), 5, t(10), 3, None), Seen::New);
        assert_eq!(d.late_len(), 1, "a late id is held until its epoch commits");
        // While a late id waits, the slow path still answers from memory.
        assert_eq!(d.admit(id_key("old3"), 5, t(10), 4, None), Seen::Same);
        assert_eq!(d.admit(id_key("b"), 7, t(101), 4, None), Seen::New);
        assert_eq!(d.check(id_key("b"), 7), Seen::Same);
        d.committed(3);
        assert_eq!(d.late_len(), 0);
    }

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).expect("ts")
    }

    #[test]
    fn horizon_bounds_memory_and_says_what_it_covers() {
        let mut d = DedupState::new(Duration::hours(24), 1_000_000);
        for h in 0..100 {
            d.record_applied(id_key(&format!("e{h}")), h as u128, t(h), h as u64 + 1);
            d.evict(h as u64 + 1);
        }
        assert!(d.len() <= 26, "{}", d.len());
        assert_eq!(d.check(id_key("e99"), 99), Seen::Same);
        assert_eq!(d.check(id_key("e99"), 98), Seen::Conflict);
        assert!(!d.covers(t(10)));
        assert!(d.covers(t(80)));
        assert_eq!(d.check(id_key("e98"), 98), Seen::Same);
        // An id that leaves the horizon before its epoch is committed stays.
        d.record_applied(id_key("fresh"), 5, t(99), 1000);
        d.record_applied(id_key("newer"), 6, t(200), 1001);
        d.evict(999);
        assert!(!d.covers(t(99)));
        assert_eq!(d.check(id_key("fresh"), 5), Seen::Same, "not committed yet: memory must answer");
        d.committed(1000);
        assert_eq!(d.check(id_key("fresh"), 5), Seen::New, "committed: the database answers now");
        // A late event is remembered until its epoch is committed.
        d.record_applied(id_key("old"), 7, t(1), 500);
        assert_eq!(d.check(id_key("old"), 7), Seen::Same);
        d.committed(499);
        assert_eq!(d.check(id_key("old"), 8), Seen::Conflict);
        d.committed(500);
        assert_eq!(d.check(id_key("old"), 7), Seen::New);
    }
}
