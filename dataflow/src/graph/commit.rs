//! *Commit*: gathers each epoch's records on worker 0 and hands them to the
//! driver once the frontier has passed the epoch.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::RecordStream;
use crate::records::{Epoch, EpochBatch, SinkRecord};

/// Gathers the records of each epoch on worker 0 and calls `on_epoch` once
/// the frontier has passed it, in epoch order. The batch is not in a
/// canonical order yet: the receiver calls [`EpochBatch::seal`] (off the
/// worker thread, in the driver's committer). Returns nothing; attach a
/// probe to `records` to know how far the commit has got.
pub fn commit_sink<'scope, F>(records: RecordStream<'scope, (SinkRecord, Epoch)>, on_epoch: F)
where
    F: FnMut(EpochBatch) + 'static,
{
    let on_epoch = Rc::new(RefCell::new(on_epoch));
    let mut stash: BTreeMap<Epoch, EpochBatch> = BTreeMap::new();
    records.sink(Exchange::new(|_| 0), "Commit", move |(input, frontier)| {
        input.for_each(|_cap, data| {
            // Records of one epoch come in runs: one map lookup per run.
            let mut records = data.drain(..).peekable();
            while let Some((first, t)) = records.next() {
                let batch = stash.entry(t).or_insert_with(|| EpochBatch { epoch: t, ..Default::default() });
                let rest = std::iter::from_fn(|| records.next_if(|(_, u)| *u == t).map(|(r, _)| r));
                for r in std::iter::once(first).chain(rest) {
                    batch.add(r);
                }
            }
        });
        while let Some((&t, _)) = stash.first_key_value() {
            if frontier.less_equal(&t) {
                break;
            }
            let Some((_, batch)) = stash.pop_first() else { break };
            (on_epoch.borrow_mut())(batch);
        }
    });
}
