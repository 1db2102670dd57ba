//! [`Version`]: the optimistic-concurrency version of a session (1 on creation, +1 per
//! attribute change), and [`ExpectedVersion`]: the version a caller last read, which a write
//! must match.

use std::fmt;

use mesh_core::FieldViolation;
use serde::{Deserialize, Serialize};

use super::SessionError;

/// A session version: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Version(i64);

impl Version {
    /// The version of a new session.
    pub const FIRST: Version = Version(1);

    /// `value` as a version, if it is at least 1.
    pub fn new(value: i64) -> Option<Self> {
        (value >= 1).then_some(Self(value))
    }

    /// The number.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The version after one more change.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Version> for i64 {
    fn from(version: Version) -> Self {
        version.0
    }
}

impl TryFrom<i64> for Version {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value).ok_or_else(|| format!("a version must be at least 1, not {value}"))
    }
}

/// The version a write expects the session to have (UpdateSession, DeleteSession).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpectedVersion(Version);

impl ExpectedVersion {
    /// Checks `raw`, the value of request field `field`: it must be at least 1.
    pub fn parse(raw: i64, field: &str) -> Result<Self, FieldViolation> {
        Version::new(raw).map(Self).ok_or_else(|| FieldViolation::new(field, "must be at least 1"))
    }

    /// The expected version.
    pub fn version(self) -> Version {
        self.0
    }

    /// Whether a session at `current` may be written: `Ok` when it is the expected version,
    /// else [`SessionError::VersionConflict`] carrying `current`.
    pub fn check(self, current: Version) -> Result<(), SessionError> {
        if self.0 == current { Ok(()) } else { Err(SessionError::VersionConflict { current }) }
    }
}

impl From<Version> for ExpectedVersion {
    fn from(version: Version) -> Self {
        Self(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_count_up() {
        assert_eq!(Version::FIRST.get(), 1);
        assert_eq!(Version::FIRST.next().get(), 2);
        assert_eq!(Version::new(0), None);
        assert_eq!(Version::new(i64::MAX).unwrap().next().get(), i64::MAX);
    }

    #[test]
    fn zero_and_negative_expected_versions_are_field_violations() {
        for raw in [0, -1, i64::MIN] {
            assert_eq!(
                ExpectedVersion::parse(raw, "expected_version"),
                Err(FieldViolation::new("expected_version", "must be at least 1")),
            );
        }
        assert_eq!(ExpectedVersion::parse(3, "expected_version").unwrap().version().get(), 3);
    }

    #[test]
    fn a_stale_expected_version_is_a_conflict_carrying_the_current_one() {
        let expected = ExpectedVersion::parse(2, "expected_version").unwrap();
        assert!(expected.check(Version::new(2).unwrap()).is_ok());
        let current = Version::new(5).unwrap();
        assert!(matches!(expected.check(current), Err(SessionError::VersionConflict { current: c }) if c == current));
    }

    #[test]
    fn a_version_is_a_json_number_and_is_checked_when_read() {
        assert_eq!(serde_json::to_string(&Version::new(7).unwrap()).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Version>("7").unwrap().get(), 7);
        assert!(serde_json::from_str::<Version>("0").is_err());
    }
}
