//! Decoding and validating one input message against the contract.
//!
//! [`decode`] applies the rules that need nothing but the message itself, in
//! the contract's order: `malformed_json`, `schema_violation`, `wrong_topic`,
//! `invalid_quantity`, `invalid_price`. The rules that need state
//! (`unknown_product`, `unknown_supplier`, `conflicting_duplicate`) are applied
//! later, in the dataflow.
//!
//! Numbers are read from their literal text (serde_json's `RawValue`), never
//! through `f64`: `5.0` must be told from `5`, `5.100` from `5.10`, and a
//! quantity beyond 64 bits must still be recognised as an integer.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::{ErrorCode, Event, EventDetail, EventKind, Rejection};

/// Longest id the contract allows, in Unicode code points.
pub const MAX_ID_CHARS: usize = 128;
/// Largest quantity the contract allows.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// The common fields every kind has, in the order `check` reads them.
const COMMON: [&str; 5] = ["event_id", "event_type", "occurred_at", "product_id", "quantity"];

/// Most field names the contract can name: the common ones and three per kind.
const MAX_NAMES: usize = COMMON.len() + 3 * EventKind::ALL.len();

/// Every field name the contract names, each once: [`COMMON`] first (so
/// their slots are `0..5`), then each kind's own ([`EventKind::fields`]).
/// Also each kind's own fields as slots in that list.
struct Names {
    names: Vec<&'static str>,
    own: [[usize; 3]; EventKind::ALL.len()],
}

impl Names {
    /// The slot of the field named `key`, if the contract names it, tried
    /// from slot `from` on (then from the start). Every key of every
    /// message is looked up here; writers put the fields in the contract's
    /// order, which is the order of the slots within a kind, so starting
    /// after the previous key's slot mostly finds a key at the first try.
    fn slot(&self, key: &str, from: usize) -> Option<usize> {
        let from = from.min(self.names.len());
        let found = |range: std::ops::Range<usize>| range.into_iter().find(|&i| self.names[i] == key);
        found(from..self.names.len()).or_else(|| found(0..from))
    }
}

fn names() -> &'static Names {
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<&'static str> = COMMON.to_vec();
        let mut slot = |name: &'static str| match names.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
        let own = EventKind::ALL.map(|k| {
            let f = k.fields();
            [slot(f.reference), slot(f.party), slot(f.money)]
        });
        Names { names, own }
    })
}

/// The raw value of every field the contract names (by slot in [`names`]);
/// unknown fields are ignored, a named field given twice is an error.
struct RawFields<'a> {
    slots: [Option<&'a RawValue>; MAX_NAMES],
}

impl<'a> RawFields<'a> {
    fn common(&self, i: usize) -> Option<&'a RawValue> {
        self.slots[i]
    }

    /// `kind`'s own three fields, in the order of [`EventKind::fields`].
    fn own(&self, kind: EventKind) -> [Option<&'a RawValue>; 3] {
        names().own[kind.index()].map(|i| self.slots[i])
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let names = names();
        let mut fields = RawFields { slots: [None; MAX_NAMES] };
        let mut seen = [false; MAX_NAMES];
        let mut next = 0;
        while let Some(key) = map.next_key_seed(NameSeed { names, from: next })? {
            match key {
                Some(i) if seen[i] => return Err(A::Error::duplicate_field(names.names[i])),
                Some(i) => {
                    seen[i] = true;
                    next = i + 1;
                    fields.slots[i] = map.next_value()?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// Reads an object key as its slot in [`names`] (`None`: not a contract
/// field), trying slot `from` first.
struct NameSeed {
    names: &'static Names,
    from: usize,
}

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Option<usize>;

    #[inline]
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for NameSeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    #[inline]
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.slot(key, self.from))
    }
}

/// A JSON number literal, split into its parts, not yet interpreted.
struct NumberLiteral<'a> {
    negative: bool,
    int: &'a str,
    frac: Option<&'a str>,
    has_exponent: bool,
}

fn number_literal(raw: &RawValue) -> Option<NumberLiteral<'_>> {
    let text = raw.get();
    let first = text.as_bytes().first()?;
    if !(first.is_ascii_digit() || *first == b'-') {
        return None;
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let has_exponent = rest.contains(['e', 'E']);
    let mantissa = rest.split(['e', 'E']).next().unwrap_or(rest);
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    Some(NumberLiteral { negative, int, frac, has_exponent })
}

/// Why a field failed its type check (for `schema_violation` details).
fn type_name(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

struct Checker<'a> {
    fields: RawFields<'a>,
}

impl<'a> Checker<'a> {
    fn violation(&self, detail: String) -> Rejection {
        // The id is read again only on this (rare) path.
        Rejection::new(ErrorCode::SchemaViolation, detail, peek_event_id(self.fields.common(0)))
    }

    fn string(&self, name: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, Rejection> {
        let raw = raw.ok_or_else(|| self.violation(format!("field `{name}` is missing or null")))?;
        if !raw.get().starts_with('"') {
            return Err(self.violation(format!("field `{name}` must be a string, got {}", type_name(raw))));
        }
        let text = raw.get();
        // The whole value is valid JSON, so a string literal without a
        // backslash holds exactly the text between its quotes.
        if text.len() >= 2 && !text.as_bytes().contains(&b'\\') {
            return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
        }
        let s: String = serde_json::from_str(text)
            .map_err(|e| self.violation(format!("field `{name}` is not a valid string: {e}")))?;
        Ok(Cow::Owned(s))
    }

    fn id(&self, name: &str, raw: Option<&'a RawValue>) -> Result<String, Rejection> {
        let s = self.string(name, raw)?;
        // At most 128 bytes is at most 128 code points: count only longer ones.
        let fits = !s.is_empty() && (s.len() <= MAX_ID_CHARS || s.chars().count() <= MAX_ID_CHARS);
        if !fits {
            let n = s.chars().count();
            return Err(
                self.violation(format!("field `{name}` must be 1..={MAX_ID_CHARS} characters, got {n}"))
            );
        }
        Ok(s.into_owned())
    }

    fn number(&self, name: &str, raw: Option<&'a RawValue>) -> Result<NumberLiteral<'a>, Rejection> {
        let raw = raw.ok_or_else(|| self.violation(format!("field `{name}` is missing or null")))?;
        number_literal(raw)
            .ok_or_else(|| self.violation(format!("field `{name}` must be a number, got {}", type_name(raw))))
    }
}

/// Reads `event_id` for error reports, if it is a string of any length.
fn peek_event_id(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(raw.get()).ok()
}

/// Decodes and checks one message value that arrived on the topic for `topic_kind`.
///
/// `value` is `None` for a tombstone. On success the event passed every rule
/// up to and including `invalid_price`.
pub fn decode(topic_kind: EventKind, value: Option<&[u8]>) -> Result<Event, Rejection> {
    let malformed = |detail: String| Rejection::new(ErrorCode::MalformedJson, detail, None);
    let bytes = value.ok_or_else(|| malformed("value is null (tombstone)".into()))?;
    if bytes.is_empty() {
        return Err(malformed("value is empty".into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("value is not UTF-8: {e}")))?;
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r']);
    if !trimmed.starts_with('{') {
        // Tell "valid JSON but not an object" from "not JSON" in the detail.
        let what = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => "value is JSON but not an object".to_string(),
            Err(e) => format!("value is not valid JSON: {e}"),
        };
        return Err(malformed(what));
    }
    let fields: RawFields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) if e.is_data() => {
            // Valid JSON object whose shape serde refused: a duplicated key.
            return Err(Rejection::new(ErrorCode::SchemaViolation, format!("{e}"), None));
        }
        Err(e) => return Err(malformed(format!("value is not valid JSON: {e}"))),
    };
    let c = Checker { fields };
    check(topic_kind, &c)
}

fn check(topic_kind: EventKind, c: &Checker<'_>) -> Result<Event, Rejection> {
    let f = &c.fields;
    // schema_violation: the common fields first, then the named type's own.
    let [event_id, event_type, occurred_at, product_id, quantity] =
        [0, 1, 2, 3, 4].map(|i| (COMMON[i], f.common(i)));
    let event_id = c.id(event_id.0, event_id.1)?;
    let event_type = c.string(event_type.0, event_type.1)?;
    let occurred_text = c.string(occurred_at.0, occurred_at.1)?;
    let occurred_at = DateTime::parse_from_rfc3339(&occurred_text)
        .map_err(|e| c.violation(format!("field `occurred_at` is not an RFC 3339 timestamp: {e}")))?
        .with_timezone(&Utc);
    let product_id = c.id(product_id.0, product_id.1)?;
    let quantity = c.number(quantity.0, quantity.1)?;
    if quantity.frac.is_some() || quantity.has_exponent {
        return Err(
            c.violation("field `quantity` must be an integer literal (no fraction, no exponent)".into())
        );
    }
    let named = EventKind::from_event_type(&event_type);
    let detail_fields = match named {
        Some(kind) => {
            let names = kind.fields();
            let [reference, party, money] = f.own(kind);
            Some((
                c.id(names.reference, reference)?,
                c.id(names.party, party)?,
                (names.money, c.number(names.money, money)?),
            ))
        }
        None => None,
    };
    if let Some((_, _, (name, money))) = &detail_fields
        && money.has_exponent
    {
        return Err(c.violation(format!("field `{name}` must be in plain decimal notation (no exponent)")));
    }

    // wrong_topic
    let kind = match named {
        Some(k) if k == topic_kind => k,
        _ => {
            return Err(Rejection::new(
                ErrorCode::WrongTopic,
                format!(
                    "field `event_type` is {event_type:?}, but topic `{}` carries {:?}",
                    topic_kind.topic(),
                    topic_kind.event_type()
                ),
                Some(event_id),
            ));
        }
    };
    let Some((ref_id, party_id, (money_name, money))) = detail_fields else {
        unreachable!("detail fields are read whenever event_type names a kind")
    };

    // invalid_quantity
    let out_of_range = || {
        Rejection::new(
            ErrorCode::InvalidQuantity,
            format!("field `quantity` must be 1..={MAX_QUANTITY}"),
            Some(event_id.clone()),
        )
    };
    if quantity.negative {
        return Err(out_of_range());
    }
    let quantity: u32 = match quantity.int.parse::<u64>() {
        Ok(q) if (1..=u64::from(MAX_QUANTITY)).contains(&q) => q as u32,
        _ => return Err(out_of_range()),
    };

    // invalid_price
    let decimals = money.frac.map_or(0, str::len);
    if decimals > 2 {
        return Err(Rejection::new(
            ErrorCode::InvalidPrice,
            format!("field `{money_name}` has {decimals} decimal places; at most 2 are allowed"),
            Some(event_id),
        ));
    }
    let amount = exact_decimal(money.int, money.frac).ok_or_else(|| {
        Rejection::new(
            ErrorCode::InvalidPrice,
            format!("field `{money_name}` is out of range"),
            Some(event_id.clone()),
        )
    })?;
    if money.negative && !amount.is_zero() {
        return Err(Rejection::new(
            ErrorCode::InvalidPrice,
            format!("field `{money_name}` is negative"),
            Some(event_id),
        ));
    }

    let detail = EventDetail::new(kind, ref_id, party_id, amount);
    Ok(Event { event_id, occurred_at, product_id, quantity, detail })
}

/// The exact decimal of a JSON number's digits (`int` and `frac` are ASCII
/// digits, `frac` has at most 2); `None` when out of range (more than the
/// 96-bit mantissa a `Decimal` holds).
fn exact_decimal(int: &str, frac: Option<&str>) -> Option<Decimal> {
    let frac = frac.unwrap_or("");
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Decimal::try_from_i128_with_scale(mantissa, frac.len() as u32).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"event_id":"e1","event_type":"online_order","occurred_at":"2026-11-25T14:03:07.123Z",
        "product_id":"P1","quantity":2,"order_id":"o1","customer_id":"c1","unit_price":5.10}"#;

    fn code(kind: EventKind, v: &str) -> Option<ErrorCode> {
        decode(kind, Some(v.as_bytes())).err().map(|r| r.code)
    }

    /// ORDER with `field` replaced by the literal JSON text `value`, or removed.
    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(ORDER).expect("fixture");
        if value == "<absent>" {
            v.remove(field);
            return serde_json::to_string(&v).expect("ser");
        }
        v.insert(field.into(), serde_json::Value::String("__X__".into()));
        serde_json::to_string(&v).expect("ser").replace("\"__X__\"", value)
    }

    #[test]
    fn valid_order_decodes_exactly() {
        let e = decode(EventKind::OnlineOrder, Some(ORDER.as_bytes())).expect("valid");
        assert_eq!(e.quantity, 2);
        assert_eq!(e.delta(), -2);
        assert_eq!(e.revenue(), Some(Decimal::new(1020, 2)));
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-25T14:03:07.123+00:00");
    }

    #[test]
    fn keys_are_read_by_name_once() {
        let dup = |field: &str, first: &str| ORDER.replacen('{', &format!("{{\"{field}\":{first},"), 1);
        // A contract field given twice breaks the schema, even if first null.
        assert_eq!(code(EventKind::OnlineOrder, &dup("quantity", "2")), Some(ErrorCode::SchemaViolation));
        assert_eq!(
            code(EventKind::OnlineOrder, &dup("unit_price", "null")),
            Some(ErrorCode::SchemaViolation)
        );
        // So does another kind's field: every name the contract uses is known.
        let twice_cost = ORDER.replacen('{', r#"{"unit_cost":1,"unit_cost":2,"#, 1);
        assert_eq!(code(EventKind::OnlineOrder, &twice_cost), Some(ErrorCode::SchemaViolation));
        // Unknown fields are ignored, twice or not.
        let extra = ORDER.replacen('{', r#"{"note":1,"note":"x","#, 1);
        assert_eq!(decode(EventKind::OnlineOrder, Some(extra.as_bytes())).ok(), decode_ok(ORDER));
        // An escaped key is the name it spells.
        let escaped = ORDER.replace(r#""order_id""#, r#""order\u005fid""#);
        assert_eq!(decode(EventKind::OnlineOrder, Some(escaped.as_bytes())).ok(), decode_ok(ORDER));
    }

    fn decode_ok(v: &str) -> Option<Event> {
        Some(decode(EventKind::OnlineOrder, Some(v.as_bytes())).expect("valid"))
    }

    #[test]
    fn byte_level_cases_are_malformed() {
        use ErrorCode::MalformedJson as M;
        assert_eq!(decode(EventKind::OnlineOrder, None).unwrap_err().code, M);
        assert_eq!(decode(EventKind::OnlineOrder, Some(b"")).unwrap_err().code, M);
        assert_eq!(decode(EventKind::OnlineOrder, Some(b"\xff\xfe{}")).unwrap_err().code, M);
        assert_eq!(code(EventKind::OnlineOrder, "[1,2]"), Some(M));
        assert_eq!(code(EventKind::OnlineOrder, "\"x\""), Some(M));
        assert_eq!(code(EventKind::OnlineOrder, "{\"event_id\":"), Some(M));
        assert_eq!(code(EventKind::OnlineOrder, "{} trailing"), Some(M));
    }

    #[test]
    fn schema_rules() {
        use ErrorCode::SchemaViolation as S;
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "5.0")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "5e1")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "\"5\"")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "\"5.00\"")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "5e2")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("event_id", "\"\"")), Some(S));
        assert_eq!(
            code(EventKind::OnlineOrder, &with("event_id", &format!("\"{}\"", "é".repeat(129)))),
            Some(S)
        );
        assert_eq!(
            code(EventKind::OnlineOrder, &with("event_id", &format!("\"{}\"", "é".repeat(128)))),
            None
        );
        assert_eq!(code(EventKind::OnlineOrder, &with("customer_id", "<absent>")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("customer_id", "null")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("occurred_at", "\"2026-11-25 14:03\"")), Some(S));
        assert_eq!(code(EventKind::OnlineOrder, &with("occurred_at", "\"2026-11-25T14:03:07\"")), Some(S));
    }

    #[test]
    fn unknown_event_type_checks_only_common_fields_then_wrong_topic() {
        let v = r#"{"event_id":"e","event_type":"refund","occurred_at":"2026-11-25T00:00:00Z","product_id":"P","quantity":1}"#;
        assert_eq!(code(EventKind::OnlineOrder, v), Some(ErrorCode::WrongTopic));
        assert_eq!(code(EventKind::StoreSale, ORDER), Some(ErrorCode::WrongTopic));
    }

    #[test]
    fn quantity_and_price_ranges() {
        use ErrorCode::{InvalidPrice as P, InvalidQuantity as Q};
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "0")), Some(Q));
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "-3")), Some(Q));
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "1000001")), Some(Q));
        assert_eq!(code(EventKind::OnlineOrder, &with("quantity", "1000000")), None);
        assert_eq!(
            code(EventKind::OnlineOrder, &with("quantity", "123456789012345678901234567890")),
            Some(Q)
        );
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "5.100")), Some(P));
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "-0.01")), Some(P));
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "5")), None);
        assert_eq!(code(EventKind::OnlineOrder, &with("unit_price", "0")), None);
    }

    #[test]
    fn escaped_strings_and_money_are_read_exactly() {
        let e = decode(EventKind::OnlineOrder, Some(with("event_id", r#""e\u00e9\"1""#).as_bytes()))
            .expect("valid");
        assert_eq!(e.event_id, "eé\"1");
        assert_eq!(exact_decimal("12", Some("05")), Some(Decimal::new(1205, 2)));
        assert_eq!(exact_decimal("0", None), Some(Decimal::ZERO));
        assert_eq!(exact_decimal("999999999999999999", None), Some(Decimal::new(999_999_999_999_999_999, 0)));
        let big = exact_decimal("12345678901234567890123", Some("45")).expect("in range");
        assert_eq!(big.to_string(), "12345678901234567890123.45");
        assert_eq!(exact_decimal(&"9".repeat(40), None), None);
    }

    #[test]
    fn content_hash_is_stable_across_versions() {
        // Fingerprints are stored in `events_log`: a new build must compute
        // the same value as the builds that wrote them.
        let a = decode(EventKind::OnlineOrder, Some(ORDER.as_bytes())).expect("valid");
        assert_eq!(a.content_hash(), 130_588_008_500_639_093_424_455_930_246_222_457_418);
        assert_eq!(a.revenue_cents(), 1020);
        let whole = decode(EventKind::OnlineOrder, Some(with("unit_price", "7").as_bytes())).expect("valid");
        assert_eq!(whole.revenue_cents(), 1400);
        let tenths =
            decode(EventKind::OnlineOrder, Some(with("unit_price", "0.5").as_bytes())).expect("valid");
        assert_eq!(tenths.revenue_cents(), 100);
    }

    #[test]
    fn content_hash_ignores_formatting_but_not_values() {
        let a = decode(EventKind::OnlineOrder, Some(ORDER.as_bytes())).expect("valid");
        let b = decode(
            EventKind::OnlineOrder,
            Some(
                with("unit_price", "5.1")
                    .replace("2026-11-25T14:03:07.123Z", "2026-11-25T15:03:07.123+01:00")
                    .as_bytes(),
            ),
        )
        .expect("valid");
        assert_eq!(a.content_hash(), b.content_hash());
        let c = decode(EventKind::OnlineOrder, Some(with("quantity", "3").as_bytes())).expect("valid");
        assert_ne!(a.content_hash(), c.content_hash());
        let d = decode(EventKind::OnlineOrder, Some(with("extra", "{\"x\":1}").as_bytes())).expect("valid");
        assert_eq!(a.content_hash(), d.content_hash());
    }
}
