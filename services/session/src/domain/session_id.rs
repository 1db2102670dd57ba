//! [`SessionId`]: 128 bits from the operating system's CSPRNG, URL-safe base64 without
//! padding. Parsing accepts exactly the canonical encoding of 16 bytes, so one id has one
//! spelling, and the alphabet (`A-Z a-z 0-9 - _`) is safe in Redis keys, hash tags and
//! channel names.

use std::fmt;

use mesh_core::FieldViolation;
use serde::{Deserialize, Serialize};

/// Length of a session id in characters: 16 bytes in unpadded base64.
pub const SESSION_ID_LEN: usize = 22;

/// The id of a session (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// A new id: 128 bits from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(mesh_core::auth::random_id())
    }

    /// Checks `raw` (the value of request field `field`): exactly 22 characters of URL-safe
    /// base64 that decode to 16 bytes.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if !mesh_core::auth::is_random_id(raw) {
            return Err(FieldViolation::new(
                field,
                format!("must be a session id: {SESSION_ID_LEN} characters of URL-safe base64"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw, "session_id").map_err(|violation| format!("{}: {}", violation.field, violation.description))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_ids_are_22_url_safe_characters_and_parse_back() {
        let id = SessionId::generate();
        assert_eq!(id.as_str().len(), SESSION_ID_LEN);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        assert_eq!(SessionId::parse(id.as_str(), "session_id"), Ok(id));
    }

    #[test]
    fn generated_ids_do_not_repeat() {
        let ids: HashSet<_> = (0..1000).map(|_| SessionId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn an_empty_id_is_reported_on_its_field() {
        let violation = SessionId::parse("", "session_id").unwrap_err();
        assert_eq!(violation, FieldViolation::new("session_id", "must not be empty"));
    }

    #[test]
    fn ids_of_the_wrong_length_or_alphabet_are_rejected() {
        let valid = SessionId::generate().to_string();
        for bad in [
            &valid[..21],
            &format!("{valid}A"),
            &format!("{}+", &valid[..21]),
            &format!("{}/", &valid[..21]),
            &format!("{}=", &valid[..21]),
            "{tenant}abcdefghijklmn",
            "ééééééééééé",
        ] {
            let violation = SessionId::parse(bad, "session_id").unwrap_err();
            assert_eq!(violation.field, "session_id", "{bad}");
        }
    }

    #[test]
    fn only_the_canonical_spelling_of_16_bytes_is_accepted() {
        // The 22nd character carries 2 bits; the other 4 must be zero, so `AAAA...AB` is a
        // second spelling of the same bytes as `AAAA...AA` and is refused.
        assert!(SessionId::parse(&"A".repeat(22), "id").is_ok());
        assert!(SessionId::parse(&format!("{}B", "A".repeat(21)), "id").is_err());
    }

    #[test]
    fn an_id_serializes_as_a_plain_string_and_is_checked_when_read() {
        let id = SessionId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SessionId>("\"short\"").is_err());
    }
}
