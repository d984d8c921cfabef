//! Simulated upstream systems, one per kind of event (the web shop, the
//! store tills, the suppliers; `systems::upstream` picks them), each a type
//! behind [`UpstreamSystem`].
//!
//! A [`Simulation`] owns them and a shared [`Market`] (catalog, product
//! popularity, the stock the upstream world believes in) and yields contract
//! messages in a deterministic order: the same seed and options give the same
//! bytes. It can also inject exact duplicates and invalid messages of every
//! rejection kind, for demos and tests.

pub mod catalog;
mod clock;
mod systems;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use dataflow::{Catalog, ErrorCode, EventKind};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use clock::DiurnalClock;
pub use systems::UpstreamSystem;

/// Why a simulation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// There is nothing to sell.
    #[error("the catalog has no products: run `stockflow seed` first")]
    EmptyCatalog,
}

/// One message ready for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// Which input topic it goes to.
    pub kind: EventKind,
    /// The message key (`product_id`, or absent).
    pub key: Option<String>,
    /// The JSON value.
    pub value: Vec<u8>,
    /// What the processor should make of it.
    pub expect: Expect,
}

/// What the processor should make of a simulated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A valid, new event: applied.
    Applied,
    /// An injected exact copy of an earlier message: a plain duplicate.
    Duplicate,
    /// An injected fault: rejected with this code.
    Rejected(ErrorCode),
}

/// Options of a simulation run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// RNG seed: same seed, same stream.
    pub seed: u64,
    /// How many messages the run will produce (spreads event time); `None`
    /// for an unbounded run, whose event time is the wall clock.
    pub count: Option<u64>,
    /// Start of the event-time window.
    pub start: DateTime<Utc>,
    /// Length of the event-time window in days.
    pub days: f64,
    /// Share of messages that are exact re-sends of an earlier one.
    pub duplicate_ratio: f64,
    /// Share of messages that break a contract rule (every kind in turn).
    pub invalid_ratio: f64,
}

/// What the upstream world knows and shares between the systems.
pub struct Market {
    /// The catalog, as loaded from the database.
    pub catalog: Catalog,
    /// The stock level each product would have if every event were applied.
    pub believed_stock: Vec<i64>,
    /// Products whose believed stock fell to their reorder level and that
    /// no supplier has restocked yet, oldest first.
    pub reorder_queue: VecDeque<usize>,
    reorder_pending: Vec<bool>,
    popularity: WeightedIndex<f64>,
    rng: ChaCha8Rng,
    next_serial: u64,
}

impl Market {
    fn new(catalog: Catalog, seed: u64) -> Result<Self, SimError> {
        // Zipf-like popularity: product rank r sells in proportion to 1/r^1.1.
        let weights = (0..catalog.products.len()).map(|r| 1.0 / ((r + 1) as f64).powf(1.1));
        let popularity = WeightedIndex::new(weights).map_err(|_| SimError::EmptyCatalog)?;
        Ok(Market {
            believed_stock: catalog.products.iter().map(|p| p.quantity_on_hand).collect(),
            reorder_pending: vec![false; catalog.products.len()],
            catalog,
            reorder_queue: VecDeque::new(),
            popularity,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_serial: 0,
        })
    }

    /// The shared random stream.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// A product index drawn by popularity.
    pub fn popular_product(&mut self) -> usize {
        self.popularity.sample(&mut self.rng)
    }

    /// A fresh, deterministic UUID-shaped event id.
    pub fn event_id(&mut self) -> String {
        let x: u128 = self.rng.random();
        let x = (x & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let h = format!("{x:032x}");
        format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }

    /// A monotonically increasing serial for order/receipt numbers.
    pub fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Books a stock change the upstream world believes in, queueing a
    /// reorder when a product falls to its reorder level.
    pub fn book(&mut self, product: usize, delta: i64) {
        self.believed_stock[product] += delta;
        let level = i64::from(self.catalog.products[product].reorder_level);
        if self.believed_stock[product] <= level {
            if !self.reorder_pending[product] {
                self.reorder_pending[product] = true;
                self.reorder_queue.push_back(product);
            }
        } else {
            self.reorder_pending[product] = false;
        }
    }
}

/// A deterministic stream of simulated upstream traffic.
pub struct Simulation {
    market: Market,
    systems: Vec<Box<dyn UpstreamSystem>>,
    mix: WeightedIndex<f64>,
    clock: Option<DiurnalClock>,
    options: SimOptions,
    produced: u64,
    recent: VecDeque<SimMessage>,
    next_invalid: usize,
}

/// How many recent messages are kept as candidates for duplicates.
const RECENT: usize = 2_000;

impl Simulation {
    /// A simulation over `catalog`, which must hold at least one product.
    pub fn new(catalog: Catalog, options: SimOptions) -> Result<Self, SimError> {
        let market = Market::new(catalog, options.seed)?;
        let systems: Vec<Box<dyn UpstreamSystem>> =
            EventKind::ALL.into_iter().map(systems::upstream).collect();
        let mix = WeightedIndex::new(systems.iter().map(|s| s.share())).expect("positive shares");
        let clock = options.count.map(|_| DiurnalClock::new(options.start, options.days.max(1e-6)));
        Ok(Simulation {
            market,
            systems,
            mix,
            clock,
            options,
            produced: 0,
            recent: VecDeque::new(),
            next_invalid: 0,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        match (&self.clock, self.options.count) {
            (Some(clock), Some(n)) if n > 0 => clock.at(self.produced as f64 / n as f64),
            _ => Utc::now(),
        }
    }

    /// The next message.
    pub fn next_message(&mut self) -> SimMessage {
        let at = self.now();
        self.produced += 1;
        let roll: f64 = self.market.rng.random();
        if roll < self.options.duplicate_ratio && !self.recent.is_empty() {
            let i = self.market.rng.random_range(0..self.recent.len());
            let mut m = self.recent[i].clone();
            m.expect = Expect::Duplicate;
            return m;
        }
        if roll < self.options.duplicate_ratio + self.options.invalid_ratio {
            let code = ErrorCode::ALL[self.next_invalid % ErrorCode::ALL.len()];
            self.next_invalid += 1;
            if let Some(m) = systems::invalid_message(&mut self.market, code, at, &self.recent) {
                return m;
            }
        }
        // Suppliers answer the reorder queue first; otherwise pick by traffic share.
        let pick = if self.market.reorder_queue.is_empty() || self.market.rng.random_bool(0.7) {
            self.mix.sample(&mut self.market.rng)
        } else {
            EventKind::SupplierRestock.index()
        };
        let msg = self.systems[pick].next_message(&mut self.market, at);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(msg.clone());
        msg
    }
}

impl Iterator for Simulation {
    type Item = SimMessage;

    fn next(&mut self) -> Option<SimMessage> {
        match self.options.count {
            Some(n) if self.produced >= n => None,
            _ => Some(self.next_message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_produced_valid_and_books_its_effect() {
        let options = SimOptions {
            seed: 7,
            count: Some(3_000),
            start: DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default(),
            days: 1.0,
            duplicate_ratio: 0.0,
            invalid_ratio: 0.0,
        };
        let sim = Simulation::new(catalog::generate(50, 5), options).expect("a catalog");
        let mut per_kind = [0u32; EventKind::ALL.len()];
        for m in sim {
            assert_eq!(m.expect, Expect::Applied);
            let e = dataflow::validate::decode(m.kind, Some(&m.value)).expect("valid by the contract");
            assert_eq!(e.kind(), m.kind);
            assert_eq!(m.key.as_deref(), Some(e.product_id.as_str()));
            per_kind[m.kind.index()] += 1;
        }
        assert!(per_kind.iter().all(|n| *n > 0), "every kind speaks: {per_kind:?}");
    }
}
