//! A client's JSON, read without rewriting it. Owns parsing a body (or one NDJSON line) into
//! [`Item`]s and writing a [`ClientObject`] back as an event; which names are reserved is
//! [`crate::reserved`]'s, and how a body is split and answered is the source's.
//!
//! - Exact passthrough: no `serde_json::Value` is built. An object is read as its list of
//!   (key, value) pairs, each the raw text the client sent ([`RawValue`]), and written back
//!   in the client's order with those bytes: numbers of any size or precision
//!   (`18446744073709551616`, `1e400`), strings with their escapes, nested objects and
//!   arrays, duplicate keys — all arrive as sent. Whitespace between the pairs is not kept.
//! - Validity: parsing checks the whole JSON text (syntax, UTF-8, escapes), so a source can
//!   refuse a request before anything of it is stored.
//! - Reserved names are compared after decoding escapes (`"s\u0065q"` is `seq`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::write_json_str;
use crate::reserved::{ReservedFields, CLIENT_FIELDS};

/// A JSON object as the client sent it: its fields in order, keys and values raw.
#[derive(Debug, Clone, Default)]
pub struct ClientObject<'a> {
    fields: Vec<(&'a RawValue, &'a RawValue)>,
}

/// One JSON value where an event is expected.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// An object: an event of the client's fields.
    Object(ClientObject<'a>),
    /// A string: a line, the event's `message`.
    Line(Cow<'a, str>),
    /// Anything else, named for the error message (`"a number"`).
    Other(&'static str),
}

/// A JSON body: an array of items, or one.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// `[…]`.
    Many(Vec<Item<'a>>),
    /// Anything but an array.
    One(Item<'a>),
}

impl<'a> ClientObject<'a> {
    /// Reads one JSON object (for the sink's guard over records already stored).
    pub fn parse(json: &'a str) -> Option<Self> {
        match serde_json::from_str(json) {
            Ok(Item::Object(o)) => Some(o),
            _ => None,
        }
    }

    /// The fields in order: (decoded name, raw key, raw value).
    #[allow(clippy::type_complexity)]
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (Option<Cow<'a, str>>, &'a RawValue, &'a RawValue)> + '_ {
        self.fields.iter().map(|(k, v)| (key_name(k), *k, *v))
    }

    /// The raw value of the first top-level field named `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| key_name(k).as_deref() == Some(name))
            .map(|(_, v)| *v)
    }

    /// The field names, decoded (`None` for a key whose escapes do not decode).
    pub fn names(&self) -> impl Iterator<Item = Option<Cow<'a, str>>> + '_ {
        self.fields.iter().map(|(k, _)| key_name(k))
    }

    /// Writes the object as an event: the client's fields in order, byte for byte, except
    /// those with a reserved name, which go (in order) into one object under
    /// `client_fields`; then each of `added` (name, string value) the client did not send.
    pub fn write_event(
        &self,
        buf: &mut Vec<u8>,
        reserved: &ReservedFields,
        added: &[(&str, &str)],
    ) {
        let mut present = 0u32;
        let mut moved = false;
        let mut sep = b'{';
        for (k, v) in &self.fields {
            let name = key_name(k);
            let name = name.as_deref().unwrap_or("");
            if reserved.contains(name) {
                moved = true;
                continue;
            }
            for (i, (a, _)) in added.iter().enumerate() {
                if *a == name {
                    present |= 1 << i;
                }
            }
            buf.push(sep);
            sep = b',';
            write_pair(buf, k, v);
        }
        if moved {
            buf.push(sep);
            sep = b',';
            write_json_str(buf, CLIENT_FIELDS);
            buf.push(b':');
            let mut inner = b'{';
            for (k, v) in &self.fields {
                if key_name(k).is_some_and(|n| reserved.contains(&n)) {
                    buf.push(inner);
                    inner = b',';
                    write_pair(buf, k, v);
                }
            }
            buf.push(b'}');
        }
        for (i, (a, value)) in added.iter().enumerate() {
            if present & (1 << i) == 0 {
                buf.push(sep);
                sep = b',';
                write_json_str(buf, a);
                buf.push(b':');
                write_json_str(buf, value);
            }
        }
        if sep == b'{' {
            buf.push(b'{');
        }
        buf.push(b'}');
    }
}

fn write_pair(buf: &mut Vec<u8>, k: &RawValue, v: &RawValue) {
    buf.extend_from_slice(k.get().as_bytes());
    buf.push(b':');
    buf.extend_from_slice(v.get().as_bytes());
}

/// The name a raw key (`"…"`, as sent) stands for.
fn key_name(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or string")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<&'de RawValue>()? {
            fields.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Item::Object(ClientObject { fields }))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Item<'de>, E> {
        Ok(Item::Line(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Item<'de>, E> {
        Ok(Item::Line(Cow::Owned(s.to_string())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Item<'de>, E> {
        Ok(Item::Line(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item<'de>, E> {
        Ok(Item::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item<'de>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item<'de>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item<'de>, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item<'de>, E> {
        Ok(Item::Other("null"))
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array, object or string")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(64));
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            items.push(item);
        }
        Ok(Body::Many(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body<'de>, A::Error> {
        ItemVisitor.visit_map(map).map(Body::One)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Body<'de>, E> {
        ItemVisitor.visit_borrowed_str(s).map(Body::One)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Body<'de>, E> {
        ItemVisitor.visit_str(s).map(Body::One)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Body<'de>, E> {
        ItemVisitor.visit_string(s).map(Body::One)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Body<'de>, E> {
        ItemVisitor.visit_bool(v).map(Body::One)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Body<'de>, E> {
        ItemVisitor.visit_i64(v).map(Body::One)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Body<'de>, E> {
        ItemVisitor.visit_u64(v).map(Body::One)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Body<'de>, E> {
        ItemVisitor.visit_f64(v).map(Body::One)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Body<'de>, E> {
        ItemVisitor.visit_unit().map(Body::One)
    }
}

impl<'de> Deserialize<'de> for Body<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

/// Reads a whole JSON body (an array of items, or one item).
pub fn parse_body(text: &str) -> Result<Body<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads one item (an NDJSON line).
pub fn parse_item(text: &str) -> Result<Item<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests;
