//! One message value through `decode`: whatever the bytes, a decoded event
//! or a rejection with a reason, never a panic. The first byte picks the
//! topic the value arrived on.
#![no_main]

use dataflow::EventKind;
use dataflow::validate::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&topic, value)) = data.split_first() else { return };
    let kind = EventKind::ALL[usize::from(topic) % EventKind::ALL.len()];
    match decode(kind, Some(value)) {
        Ok(event) => assert!(!event.event_id.is_empty(), "an accepted event has an id"),
        Err(rejection) => assert!(!rejection.detail.is_empty(), "a rejection says why"),
    }
});
