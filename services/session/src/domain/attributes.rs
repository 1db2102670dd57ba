//! [`Attributes`]: the application data of a session, a string map within the limits that
//! `mesh.session.v1.Session.attributes` documents, and [`AttributesPatch`], the set/remove
//! patch of UpdateSession.
//!
//! Every check reports all its violations at once, each on the path of the offending entry
//! (`attributes.<key>`), so a client can fix a request in one round.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::FieldViolation;
use serde::{Deserialize, Serialize};

/// Most entries a session may hold.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest key, in characters (keys are ASCII, so also in bytes).
pub const MAX_KEY_LEN: usize = 128;
/// Largest value, in UTF-8 bytes (4 KiB).
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Largest sum of the UTF-8 bytes of all keys and values (16 KiB).
pub const MAX_ATTRIBUTES_TOTAL_BYTES: usize = 16 * 1024;
/// Most keys one patch may remove.
pub const MAX_REMOVED_KEYS: usize = 64;

/// Longest key echoed in a field path; longer (invalid) keys are cut there.
const MAX_KEY_IN_PATH: usize = MAX_KEY_LEN;

/// A session's attributes: a map that keeps every limit (see the constants). Ordered by key,
/// so its JSON and its iteration are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct Attributes(BTreeMap<String, String>);

impl Attributes {
    /// Checks `entries` (the value of request field `field`) against every limit. Returns
    /// all violations: `<field>.<key>` for a bad key or value, `<field>` for the number of
    /// entries, an empty key and the total size.
    pub fn parse(
        entries: impl IntoIterator<Item = (String, String)>,
        field: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let map: BTreeMap<String, String> = entries.into_iter().collect();
        let mut violations = Vec::new();
        for (key, value) in &map {
            check_entry(key, value, field, &mut violations);
        }
        check_totals(&map, field, &mut violations);
        if violations.is_empty() { Ok(Self(map)) } else { Err(violations) }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of the UTF-8 bytes of all keys and values.
    pub fn total_bytes(&self) -> usize {
        total_bytes(&self.0)
    }

    /// The entries, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The entries as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The entries, owned.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl From<Attributes> for BTreeMap<String, String> {
    fn from(attributes: Attributes) -> Self {
        attributes.0
    }
}

impl TryFrom<BTreeMap<String, String>> for Attributes {
    type Error = String;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::parse(map, "attributes").map_err(|violations| FieldViolation::describe_all(&violations))
    }
}

/// A change of a session's attributes (UpdateSession): the keys in `remove` go first, then
/// every entry of `set` is added or replaced; other entries stay. Build it with
/// [`AttributesPatch::parse`], apply it with [`AttributesPatch::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributesPatch {
    set: BTreeMap<String, String>,
    remove: BTreeSet<String>,
}

impl AttributesPatch {
    /// Checks a patch: `set` (request field `set_field`) and `remove` (`remove_field`).
    ///
    /// Violations: a patch with both lists empty (on `set_field`); a key in both lists
    /// (`<set_field>.<key>`); a bad key or value in `set` (`<set_field>.<key>`); a bad key in
    /// `remove` (`<remove_field>[<index>]`); more than [`MAX_REMOVED_KEYS`] keys to remove
    /// (`remove_field`). Removing an absent key is allowed (it is ignored). The limits on the
    /// number of entries and the total size concern the result and are checked by
    /// [`apply`](Self::apply).
    pub fn parse(
        set: impl IntoIterator<Item = (String, String)>,
        set_field: &str,
        remove: impl IntoIterator<Item = String>,
        remove_field: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let set: BTreeMap<String, String> = set.into_iter().collect();
        let remove_list: Vec<String> = remove.into_iter().collect();
        let mut violations = Vec::new();
        if set.is_empty() && remove_list.is_empty() {
            violations.push(FieldViolation::new(set_field, "a patch must set or remove at least one attribute"));
        }
        if remove_list.len() > MAX_REMOVED_KEYS {
            violations.push(FieldViolation::new(
                remove_field,
                format!("must hold at most {MAX_REMOVED_KEYS} keys, holds {}", remove_list.len()),
            ));
        }
        for (index, key) in remove_list.iter().enumerate() {
            if let Err(description) = check_key(key) {
                violations.push(FieldViolation::new(format!("{remove_field}[{index}]"), description));
            }
        }
        let remove: BTreeSet<String> = remove_list.into_iter().collect();
        for (key, value) in &set {
            if remove.contains(key) {
                violations.push(FieldViolation::new(
                    entry_path(set_field, key),
                    format!("must not also be in {remove_field}"),
                ));
            }
            check_entry(key, value, set_field, &mut violations);
        }
        if violations.is_empty() { Ok(Self { set, remove }) } else { Err(violations) }
    }

    /// The entries to add or replace.
    pub fn set(&self) -> &BTreeMap<String, String> {
        &self.set
    }

    /// The keys to remove.
    pub fn remove(&self) -> &BTreeSet<String> {
        &self.remove
    }

    /// The attributes after the patch: removals first, then sets. Fails when the result would
    /// break the limit on the number of entries or the total size (reported on `set_attributes`,
    /// the part of the patch that grows a session).
    pub fn apply(&self, current: &Attributes) -> Result<Attributes, Vec<FieldViolation>> {
        let mut result = current.0.clone();
        for key in &self.remove {
            result.remove(key);
        }
        for (key, value) in &self.set {
            result.insert(key.clone(), value.clone());
        }
        let mut violations = Vec::new();
        if result.len() > MAX_ATTRIBUTES {
            violations.push(FieldViolation::new(
                "set_attributes",
                format!("the session would hold {} attributes; at most {MAX_ATTRIBUTES} are allowed", result.len()),
            ));
        }
        let total = total_bytes(&result);
        if total > MAX_ATTRIBUTES_TOTAL_BYTES {
            violations.push(FieldViolation::new(
                "set_attributes",
                format!(
                    "the session's attributes would take {total} bytes; at most {MAX_ATTRIBUTES_TOTAL_BYTES} are allowed"
                ),
            ));
        }
        if violations.is_empty() { Ok(Attributes(result)) } else { Err(violations) }
    }
}

/// Checks one key: 1 to [`MAX_KEY_LEN`] characters of `[A-Za-z0-9_.-]`.
fn check_key(key: &str) -> Result<(), String> {
    let charset_ok = key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if key.is_empty() || key.len() > MAX_KEY_LEN || !charset_ok {
        return Err(format!("keys must be 1 to {MAX_KEY_LEN} characters of A-Z, a-z, 0-9, '_', '.' or '-'"));
    }
    Ok(())
}

/// Checks one entry of the map in `field`, pushing its violations.
fn check_entry(key: &str, value: &str, field: &str, violations: &mut Vec<FieldViolation>) {
    if key.is_empty() {
        violations.push(FieldViolation::new(field, "keys must not be empty"));
        return;
    }
    if let Err(description) = check_key(key) {
        violations.push(FieldViolation::new(entry_path(field, key), description));
    }
    if value.len() > MAX_VALUE_BYTES {
        violations.push(FieldViolation::new(
            entry_path(field, key),
            format!("values must be at most {MAX_VALUE_BYTES} bytes, this one is {}", value.len()),
        ));
    }
}

/// Checks the number of entries and the total size of a whole map in `field`.
fn check_totals(map: &BTreeMap<String, String>, field: &str, violations: &mut Vec<FieldViolation>) {
    if map.len() > MAX_ATTRIBUTES {
        violations.push(FieldViolation::new(
            field,
            format!("must hold at most {MAX_ATTRIBUTES} entries, holds {}", map.len()),
        ));
    }
    let total = total_bytes(map);
    if total > MAX_ATTRIBUTES_TOTAL_BYTES {
        violations.push(FieldViolation::new(
            field,
            format!("keys and values together must be at most {MAX_ATTRIBUTES_TOTAL_BYTES} bytes, are {total}"),
        ));
    }
}

fn total_bytes(map: &BTreeMap<String, String>) -> usize {
    map.iter().map(|(key, value)| key.len() + value.len()).sum()
}

/// `<field>.<key>`, with an overlong (invalid) key cut so a hostile request cannot make the
/// error large.
fn entry_path(field: &str, key: &str) -> String {
    if key.len() <= MAX_KEY_IN_PATH {
        return format!("{field}.{key}");
    }
    let cut = (0..=MAX_KEY_IN_PATH).rev().find(|&at| key.is_char_boundary(at)).unwrap_or(0);
    format!("{field}.{}…", &key[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn attributes(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::parse(entries(pairs), "attributes").unwrap()
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn patch(set: &[(&str, &str)], remove: &[&str]) -> Result<AttributesPatch, Vec<FieldViolation>> {
        AttributesPatch::parse(
            entries(set),
            "set_attributes",
            remove.iter().map(|key| key.to_string()),
            "remove_attributes",
        )
    }

    #[test]
    fn attributes_within_every_limit_are_accepted() {
        let attrs = attributes(&[("theme", "dark"), ("cart.items", "3"), ("a_b-c.D9", "")]);
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs.get("theme"), Some("dark"));
        assert!(Attributes::parse(Vec::new(), "attributes").unwrap().is_empty());
    }

    #[test]
    fn attributes_exactly_at_the_limits_are_accepted() {
        let key = "k".repeat(MAX_KEY_LEN);
        let value = "v".repeat(MAX_VALUE_BYTES);
        assert!(Attributes::parse([(key, value)], "attributes").is_ok());
        let many: Vec<_> = (0..MAX_ATTRIBUTES).map(|n| (format!("k{n}"), String::new())).collect();
        assert!(Attributes::parse(many, "attributes").is_ok());
        // Four entries of 4 KiB values with 1-byte keys would be 16 KiB + 4 bytes: cut 4 bytes.
        let full: Vec<_> = (0..4).map(|n| (n.to_string(), "v".repeat(MAX_VALUE_BYTES - 1))).collect();
        assert!(Attributes::parse(full, "attributes").is_ok());
    }

    #[test]
    fn every_bad_entry_is_reported_on_its_own_path() {
        let bad = entries(&[("has space", "x"), ("ok", "fine"), ("emoji😀", "y")]);
        let mut with_big_value = bad.clone();
        with_big_value.push(("big".into(), "x".repeat(MAX_VALUE_BYTES + 1)));
        let violations = Attributes::parse(with_big_value, "attributes").unwrap_err();
        assert_eq!(fields(&violations), ["attributes.big", "attributes.emoji😀", "attributes.has space"]);
        assert!(violations[0].description.contains("4096 bytes"), "{violations:?}");
    }

    #[test]
    fn a_value_limit_counts_utf8_bytes_not_characters() {
        let value = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
        let violations = Attributes::parse([("name".to_string(), value)], "attributes").unwrap_err();
        assert_eq!(fields(&violations), ["attributes.name"]);
    }

    #[test]
    fn an_empty_or_overlong_key_is_refused() {
        let violations = Attributes::parse(entries(&[("", "x")]), "attributes").unwrap_err();
        assert_eq!(violations, [FieldViolation::new("attributes", "keys must not be empty")]);
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let violations = Attributes::parse([(long.clone(), String::new())], "attributes").unwrap_err();
        assert_eq!(fields(&violations), [format!("attributes.{}…", &long[..MAX_KEY_LEN])]);
    }

    #[test]
    fn too_many_entries_and_too_many_bytes_are_reported_on_the_map() {
        let many: Vec<_> = (0..=MAX_ATTRIBUTES).map(|n| (format!("k{n}"), String::new())).collect();
        let violations = Attributes::parse(many, "attributes").unwrap_err();
        assert_eq!(fields(&violations), ["attributes"]);
        assert!(violations[0].description.contains("at most 64 entries"));

        let heavy: Vec<_> = (0..5).map(|n| (format!("k{n}"), "v".repeat(MAX_VALUE_BYTES))).collect();
        let violations = Attributes::parse(heavy, "attributes").unwrap_err();
        assert_eq!(fields(&violations), ["attributes"]);
        assert!(violations[0].description.contains("16384 bytes"));
    }

    #[test]
    fn attributes_serialize_as_a_json_object_and_are_checked_when_read() {
        let attrs = attributes(&[("b", "2"), ("a", "1")]);
        assert_eq!(serde_json::to_string(&attrs).unwrap(), r#"{"a":"1","b":"2"}"#);
        assert_eq!(serde_json::from_str::<Attributes>(r#"{"a":"1","b":"2"}"#).unwrap(), attrs);
        assert!(serde_json::from_str::<Attributes>(r#"{"bad key":"1"}"#).is_err());
    }

    #[test]
    fn a_patch_removes_first_then_sets() {
        let current = attributes(&[("keep", "1"), ("drop", "2"), ("change", "3")]);
        let result = patch(&[("change", "new"), ("add", "4")], &["drop", "absent"]).unwrap().apply(&current).unwrap();
        assert_eq!(result, attributes(&[("keep", "1"), ("change", "new"), ("add", "4")]));
    }

    #[test]
    fn an_empty_patch_is_refused() {
        let violations = patch(&[], &[]).unwrap_err();
        assert_eq!(fields(&violations), ["set_attributes"]);
    }

    #[test]
    fn a_key_both_set_and_removed_is_refused() {
        let violations = patch(&[("theme", "dark")], &["theme"]).unwrap_err();
        assert_eq!(violations, [FieldViolation::new("set_attributes.theme", "must not also be in remove_attributes")]);
    }

    #[test]
    fn bad_keys_in_either_list_and_too_many_removals_are_reported() {
        let violations = patch(&[("bad key", "x")], &["ok", "bad/key"]).unwrap_err();
        assert_eq!(fields(&violations), ["remove_attributes[1]", "set_attributes.bad key"]);

        let removals: Vec<String> = (0..=MAX_REMOVED_KEYS).map(|n| format!("k{n}")).collect();
        let removals: Vec<&str> = removals.iter().map(String::as_str).collect();
        let violations = patch(&[], &removals).unwrap_err();
        assert_eq!(fields(&violations), ["remove_attributes"]);
    }

    #[test]
    fn the_limits_apply_to_the_result_of_a_patch() {
        let full: Vec<_> = (0..MAX_ATTRIBUTES).map(|n| (format!("k{n}"), String::new())).collect();
        let current = Attributes::parse(full, "attributes").unwrap();
        let violations = patch(&[("one_more", "")], &[]).unwrap().apply(&current).unwrap_err();
        assert_eq!(fields(&violations), ["set_attributes"]);
        // Making room first keeps the result within the limit.
        assert_eq!(patch(&[("one_more", "")], &["k0"]).unwrap().apply(&current).unwrap().len(), MAX_ATTRIBUTES);

        let heavy = attributes(&[("a", &"v".repeat(MAX_VALUE_BYTES)), ("b", &"v".repeat(MAX_VALUE_BYTES))]);
        let big = "v".repeat(MAX_VALUE_BYTES);
        let violations = patch(&[("c", &big), ("d", &big)], &[]).unwrap().apply(&heavy).unwrap_err();
        assert!(violations[0].description.contains("16384"), "{violations:?}");
    }
}
