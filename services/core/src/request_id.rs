//! [`RequestId`]: the idempotency key of create calls (AIP-155): CreateSession, Register.

use std::fmt;

use crate::FieldViolation;

/// How long a request id keeps answering with what it created.
pub const REQUEST_ID_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// A client-chosen UUID that makes a retried create return the first result. Kept in
/// lowercase, so `A1...` and `a1...` are one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Reads request field `field`: empty means no key (`None`); anything but a UUID
    /// (8-4-4-4-12 hex digits) is a violation.
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, FieldViolation> {
        if raw.is_empty() {
            return Ok(None);
        }
        let groups: Vec<&str> = raw.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
        let hex = groups.iter().all(|group| group.bytes().all(|byte| byte.is_ascii_hexdigit()));
        if lengths != [8, 4, 4, 4, 12] || !hex {
            return Err(FieldViolation::new(field, "must be a UUID such as 3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13"));
        }
        Ok(Some(Self(raw.to_ascii_lowercase())))
    }

    /// The key as text (lowercase).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_is_a_request_id_in_lowercase_and_empty_is_none() {
        let id = RequestId::parse("3F2B8C1E-9D4A-4E7B-8C21-5A6F0B9D7E13", "request_id").unwrap().unwrap();
        assert_eq!(id.as_str(), "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13");
        assert_eq!(RequestId::parse("", "request_id").unwrap(), None);
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in ["x", "3f2b8c1e9d4a4e7b8c215a6f0b9d7e13", "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e1g", "{3f2b8c1e}"] {
            assert_eq!(RequestId::parse(raw, "request_id").unwrap_err().field, "request_id", "{raw}");
        }
    }
}
