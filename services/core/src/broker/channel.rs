//! Channel names. Clients name channels relative to their tenant (`global`,
//! `actors/u1`, `sessions/abc`); the server adds the tenant from the verified caller, never
//! from the request, so no name a client sends can reach another tenant's channel.

use std::fmt;
use std::sync::Arc;

use crate::FieldViolation;
use crate::auth::is_valid_principal_id;

/// The tenant part of mesh-wide channels: not a valid tenant id (it starts with `_`).
pub const MESH_WIDE: &str = "_mesh";

/// Longest tenant-relative channel name.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;

/// A validated tenant-relative channel name: 1 to 128 characters of `[A-Za-z0-9_.:/-]`,
/// starting with a letter or digit, with no empty, `.` or `..` segment between slashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `raw`; the violation names `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let invalid = |why: &str| FieldViolation::new(field, why);
        if raw.is_empty() || raw.len() > MAX_CHANNEL_NAME_LEN {
            return Err(invalid("a channel name has 1 to 128 characters"));
        }
        if !raw.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'/' | b'-')) {
            return Err(invalid("a channel name uses only letters, digits and _ . : / -"));
        }
        if !raw.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(invalid("a channel name starts with a letter or digit"));
        }
        if raw.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
            return Err(invalid("a channel name has no empty, `.` or `..` segment"));
        }
        Ok(Self(Arc::from(raw)))
    }

    /// The name as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel of one tenant: the only way the backbone addresses channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    tenant: Arc<str>,
    name: ChannelName,
    full: Arc<str>,
}

impl ChannelKey {
    /// The channel `name` of `tenant` (a tenant id as the verified caller carries it).
    pub fn new(tenant: &str, name: ChannelName) -> Result<Self, FieldViolation> {
        if !is_valid_principal_id(tenant) {
            return Err(FieldViolation::new("tenant", "not a valid tenant id"));
        }
        let full = Arc::from(format!("{tenant}/{}", name.as_str()));
        Ok(Self { tenant: Arc::from(tenant), name, full })
    }

    /// The mesh-wide channel `name`: it belongs to no tenant (its tenant part is
    /// [`MESH_WIDE`], which no tenant id can equal), so only server code that names it
    /// reaches it, never a client's channel name.
    pub fn mesh_wide(name: ChannelName) -> Self {
        let full = Arc::from(format!("{MESH_WIDE}/{}", name.as_str()));
        Self { tenant: Arc::from(MESH_WIDE), name, full }
    }

    /// Parses a full key (`<tenant>/<name>`), as stores and feeds write it.
    pub fn from_full(full: &str) -> Option<Self> {
        let (tenant, name) = full.split_once('/')?;
        let name = ChannelName::parse(name, "channel").ok()?;
        if tenant == MESH_WIDE {
            return Some(Self::mesh_wide(name));
        }
        Self::new(tenant, name).ok()
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant-relative name, as clients see it.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    /// Whether `self` and `other` name the same channel (pointer first, then text): the
    /// cheap comparison for hot paths.
    pub fn is(&self, other: &ChannelKey) -> bool {
        Arc::ptr_eq(&self.full, &other.full) || self.full == other.full
    }

    /// `<tenant>/<name>`: unique across tenants, and free of `{` and `}` (usable inside a
    /// Redis hash tag).
    pub fn full(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_parse() {
        for name in ["global", "actors/u1", "sessions/AbC-_9", "files", "a:b.c"] {
            assert!(ChannelName::parse(name, "channel").is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_names_are_field_violations() {
        let long = "x".repeat(129);
        for name in ["", "/global", "a//b", "a/../b", "a/.", "{t}", "a b", "é", "-x", long.as_str()] {
            let violation = ChannelName::parse(name, "channels[0].name").unwrap_err();
            assert_eq!(violation.field, "channels[0].name", "{name}");
        }
    }

    #[test]
    fn keys_of_two_tenants_never_collide() {
        let name = ChannelName::parse("global", "channel").unwrap();
        let a = ChannelKey::new("t1", name.clone()).unwrap();
        let b = ChannelKey::new("t2", name).unwrap();
        assert_ne!(a.full(), b.full());
        assert_eq!(ChannelKey::from_full(a.full()), Some(a));
    }

    #[test]
    fn a_mesh_wide_channel_is_no_tenant_channel_and_round_trips() {
        let name = ChannelName::parse("revocations/all", "channel").unwrap();
        let wide = ChannelKey::mesh_wide(name.clone());
        assert!(ChannelKey::new(MESH_WIDE, name).is_err(), "no tenant can name it");
        assert_eq!(ChannelKey::from_full(wide.full()), Some(wide));
    }
}
