//! What every API area shares about the wire format, below the transport:
//! query-string encoding, the daemon's config maps, its `null` for empty.
//! A leaf.

use std::collections::HashMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Characters escaped in a query value (everything but unreserved characters and `/`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encode one query-string value.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY).to_string()
}

/// For `#[serde(deserialize_with)]`: the daemon sends `null` for empty maps
/// and lists of instances that are being created or deleted.
pub fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Config maps as Incus sends them.
pub type StringMap = HashMap<String, String>;
