//! Activities: what an actor did to an object, within the limits `mesh.feed.v1.Activity`
//! documents. [`NewActivity::parse`] checks a request and reports every violation at once,
//! each on the path of its field (`metadata.<key>` for a bad entry), so a client can fix a
//! request in one round.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::FieldViolation;
use serde::{Deserialize, Serialize};

/// Longest verb or object type, in characters (`[a-z0-9_.-]`).
pub const MAX_NAME_LEN: usize = 64;
/// Longest object id, in characters.
pub const MAX_OBJECT_ID_CHARS: usize = 256;
/// Largest text, in UTF-8 bytes (4 KiB).
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key, in characters (`[A-Za-z0-9_.-]`).
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Largest metadata value, in UTF-8 bytes (1 KiB).
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Largest sum of the UTF-8 bytes of all metadata keys and values (8 KiB).
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// The id of an activity: 128 bits from the OS CSPRNG, URL-safe base64 (22 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActivityId(String);

impl ActivityId {
    /// A new id.
    pub fn generate() -> Self {
        Self(mesh_core::auth::random_id())
    }

    /// Reads request field `field`: exactly the 22 characters an id is.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if mesh_core::auth::is_random_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(field, "must be an activity id: 22 characters of URL-safe base64"))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActivityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ActivityId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw, "activity_id").map_err(|violation| violation.description)
    }
}

impl From<ActivityId> for String {
    fn from(id: ActivityId) -> Self {
        id.0
    }
}

/// What an activity is about: a type and an id within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind of object (`[a-z0-9_.-]`, 1-64 characters).
    pub object_type: String,
    /// Id within the type (1-256 characters).
    pub object_id: String,
}

/// Application data of an activity, within the metadata limits; ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// The entries, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A checked PublishActivity request: everything but what the server assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActivity {
    /// What the actor did.
    pub verb: String,
    /// What it did it to.
    pub object: ObjectRef,
    /// Optional text.
    pub text: String,
    /// Optional application data.
    pub metadata: Metadata,
}

impl NewActivity {
    /// Checks a request's fields (`verb`, `object` as (type, id) if set, `text`,
    /// `metadata`) against every limit; returns all violations.
    pub fn parse(
        verb: &str,
        object: Option<(&str, &str)>,
        text: &str,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        check_name(verb, "verb", &mut violations);
        match object {
            None => violations.push(FieldViolation::new("object", "is required")),
            Some((object_type, object_id)) => {
                check_name(object_type, "object.object_type", &mut violations);
                let chars = object_id.chars().count();
                if chars == 0 || chars > MAX_OBJECT_ID_CHARS || object_id.chars().any(char::is_control) {
                    violations.push(FieldViolation::new(
                        "object.object_id",
                        format!("must be 1-{MAX_OBJECT_ID_CHARS} characters without control characters"),
                    ));
                }
            }
        }
        if text.len() > MAX_TEXT_BYTES {
            violations.push(FieldViolation::new("text", format!("must be at most {MAX_TEXT_BYTES} bytes (UTF-8)")));
        }
        let metadata: BTreeMap<String, String> = metadata.into_iter().collect();
        check_metadata(&metadata, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        let (object_type, object_id) = object.expect("checked above");
        Ok(Self {
            verb: verb.to_owned(),
            object: ObjectRef { object_type: object_type.to_owned(), object_id: object_id.to_owned() },
            text: text.to_owned(),
            metadata: Metadata(metadata),
        })
    }
}

/// A published activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Server-assigned id.
    pub id: ActivityId,
    /// Tenant of the actor.
    pub tenant: String,
    /// The user who published it.
    pub actor: String,
    /// What the actor did.
    pub verb: String,
    /// What it did it to.
    pub object: ObjectRef,
    /// Optional text (may be empty).
    pub text: String,
    /// Optional application data.
    pub metadata: Metadata,
    /// When it was published, whole milliseconds since the epoch (server clock).
    #[serde(with = "millis")]
    pub create_time: SystemTime,
}

impl Activity {
    /// The activity `new` by `actor` of `tenant`, published at `now` (kept to milliseconds).
    pub fn new(id: ActivityId, tenant: &str, actor: &str, new: NewActivity, now: SystemTime) -> Self {
        Self {
            id,
            tenant: tenant.to_owned(),
            actor: actor.to_owned(),
            verb: new.verb,
            object: new.object,
            text: new.text,
            metadata: new.metadata,
            create_time: to_millis(now),
        }
    }
}

/// `time` cut to whole milliseconds (what the stores keep).
pub(crate) fn to_millis(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Serde of a time as milliseconds since the epoch.
pub(crate) mod millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        serializer.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

/// A verb or object type: 1-64 characters of `[a-z0-9_.-]`.
fn check_name(raw: &str, field: &str, violations: &mut Vec<FieldViolation>) {
    let valid = !raw.is_empty()
        && raw.len() <= MAX_NAME_LEN
        && raw
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'.' | b'-'));
    if !valid {
        violations.push(FieldViolation::new(field, format!("must be 1-{MAX_NAME_LEN} characters of [a-z0-9_.-]")));
    }
}

fn check_metadata(metadata: &BTreeMap<String, String>, violations: &mut Vec<FieldViolation>) {
    if metadata.len() > MAX_METADATA_ENTRIES {
        violations.push(FieldViolation::new("metadata", format!("must have at most {MAX_METADATA_ENTRIES} entries")));
    }
    let mut total = 0;
    for (key, value) in metadata {
        total += key.len() + value.len();
        let key_valid = !key.is_empty()
            && key.len() <= MAX_METADATA_KEY_LEN
            && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
        // A key is echoed in the path only when it is valid (so the path stays readable).
        let path = if key_valid { format!("metadata.{key}") } else { "metadata".to_owned() };
        if !key_valid {
            violations.push(FieldViolation::new(
                &path,
                format!("every key must be 1-{MAX_METADATA_KEY_LEN} characters of [A-Za-z0-9_.-]"),
            ));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            violations.push(FieldViolation::new(
                path,
                format!("a value must be at most {MAX_METADATA_VALUE_BYTES} bytes (UTF-8)"),
            ));
        }
    }
    if total > MAX_METADATA_BYTES {
        violations.push(FieldViolation::new(
            "metadata",
            format!("keys and values together must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<NewActivity, Vec<FieldViolation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|violation| violation.field).collect()
    }

    #[test]
    fn a_good_request_parses_and_keeps_its_metadata_in_key_order() {
        let metadata = [("z".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        let new = NewActivity::parse("post", Some(("post", "123")), "hello", metadata).unwrap();
        assert_eq!(new.object, ObjectRef { object_type: "post".into(), object_id: "123".into() });
        assert_eq!(new.metadata.iter().collect::<Vec<_>>(), [("a", "2"), ("z", "1")]);
    }

    #[test]
    fn every_violation_is_reported_at_once_on_its_field() {
        let metadata = [("bad key".to_owned(), "v".to_owned()), ("big".to_owned(), "x".repeat(2000))];
        let result = NewActivity::parse("Post!", Some(("", "")), &"t".repeat(5000), metadata);
        assert_eq!(
            fields(result),
            ["verb", "object.object_type", "object.object_id", "text", "metadata", "metadata.big"]
        );
        assert_eq!(fields(NewActivity::parse("post", None, "", [])), ["object"]);
    }

    #[test]
    fn metadata_limits_count_entries_and_total_bytes() {
        let many = (0..33).map(|i| (format!("k{i}"), String::new()));
        assert_eq!(fields(NewActivity::parse("post", Some(("post", "1")), "", many)), ["metadata"]);
        let heavy = (0..9).map(|i| (format!("k{i}"), "v".repeat(1000)));
        assert_eq!(fields(NewActivity::parse("post", Some(("post", "1")), "", heavy)), ["metadata"]);
        let fine = (0..8).map(|i| (format!("k{i}"), "v".repeat(1000)));
        assert!(NewActivity::parse("post", Some(("post", "1")), "", fine).is_ok());
    }

    #[test]
    fn limits_are_inclusive() {
        let name = "a".repeat(MAX_NAME_LEN);
        let object_id = "é".repeat(MAX_OBJECT_ID_CHARS);
        let text = "t".repeat(MAX_TEXT_BYTES);
        assert!(NewActivity::parse(&name, Some((&name, &object_id)), &text, []).is_ok());
    }

    #[test]
    fn activity_ids_are_22_characters_and_round_trip_through_json() {
        let id = ActivityId::generate();
        assert_eq!(ActivityId::parse(id.as_str(), "activity_id").unwrap(), id);
        assert_eq!(ActivityId::parse("short", "activity_id").unwrap_err().field, "activity_id");
        let new = NewActivity::parse("like", Some(("post", "9")), "", []).unwrap();
        let activity = Activity::new(id, "acme", "alice", new, SystemTime::now());
        let json = serde_json::to_string(&activity).unwrap();
        assert_eq!(serde_json::from_str::<Activity>(&json).unwrap(), activity);
    }
}
