//! Validated names of the job queue: [`QueueName`] (it becomes part of Redis keys),
//! [`JobId`] (the producer's event id) and the checks of group and consumer names.

use std::fmt;

use super::JobError;

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 64;
/// Longest job id, in bytes.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest group or consumer name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The name of a queue: 1 to 64 ASCII letters, digits, `.`, `_`, `-` or `:`. It is the hash
/// tag of the queue's Redis keys, so it never holds `{` or `}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    /// Checks `raw` against the rules above.
    pub fn parse(raw: &str) -> Result<Self, JobError> {
        let invalid = |reason: String| JobError::InvalidName { field: "queue", reason };
        if raw.is_empty() || raw.len() > MAX_QUEUE_NAME_LEN {
            return Err(invalid(format!("must be 1 to {MAX_QUEUE_NAME_LEN} characters")));
        }
        if let Some(bad) = raw.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))) {
            return Err(invalid(format!("must hold only ASCII letters, digits, '.', '_', '-' or ':', not {bad:?}")));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a job: the producer's event id (a UUID, a random id, an idempotency key),
/// 1 to 128 bytes of printable characters without whitespace. Handlers are idempotent on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Checks `raw` against the rules above.
    pub fn parse(raw: &str) -> Result<Self, JobError> {
        check_token("job id", raw, MAX_JOB_ID_LEN)?;
        Ok(Self(raw.to_owned()))
    }

    /// A new random id (128 bits, URL-safe base64, 22 characters), for producers without
    /// an event id of their own.
    pub fn random() -> Self {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a consumer group or consumer name: 1 to 128 bytes of printable characters
/// without whitespace.
pub(super) fn check_member_names(group: &str, consumer: &str) -> Result<(), JobError> {
    check_token("group", group, MAX_NAME_LEN)?;
    check_token("consumer", consumer, MAX_NAME_LEN)
}

/// Checks a group name alone (for `stats`).
pub(super) fn check_group_name(group: &str) -> Result<(), JobError> {
    check_token("group", group, MAX_NAME_LEN)
}

fn check_token(field: &'static str, raw: &str, max_len: usize) -> Result<(), JobError> {
    if raw.is_empty() || raw.len() > max_len {
        return Err(JobError::InvalidName { field, reason: format!("must be 1 to {max_len} bytes") });
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(JobError::InvalidName { field, reason: "must not hold whitespace or control characters".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_name_cannot_break_out_of_its_hash_tag() {
        assert!(QueueName::parse("audit.v1").is_ok());
        assert!(QueueName::parse("audit}x").is_err());
        assert!(QueueName::parse("{audit").is_err());
        assert!(QueueName::parse("").is_err());
        assert!(QueueName::parse(&"q".repeat(MAX_QUEUE_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn a_job_id_is_a_printable_token() {
        assert!(JobId::parse("0190b6f2-7c1e-7d1a-9f00-1b2c3d4e5f60").is_ok());
        assert!(JobId::parse("evt_ü").is_ok());
        assert!(JobId::parse("two words").is_err());
        assert!(JobId::parse("line\nbreak").is_err());
        assert!(JobId::parse(&"x".repeat(MAX_JOB_ID_LEN + 1)).is_err());
    }

    #[test]
    fn random_job_ids_differ_and_parse() {
        let (first, second) = (JobId::random(), JobId::random());
        assert_ne!(first, second);
        assert_eq!(JobId::parse(first.as_str()).unwrap(), first);
    }

    #[test]
    fn group_and_consumer_names_are_checked() {
        assert!(check_member_names("audit-writer", "meshd-1").is_ok());
        assert!(matches!(check_member_names("", "c"), Err(JobError::InvalidName { field: "group", .. })));
        assert!(matches!(check_member_names("g", "a b"), Err(JobError::InvalidName { field: "consumer", .. })));
    }
}
