//! [`PageTokens`]: ListFeed's page tokens, opaque to clients: the cursor (the offset of the
//! last activity returned) sealed with ChaCha20-Poly1305 under the server's key, with the
//! caller's tenant and user and the feed as associated data. A token is therefore encrypted
//! and authenticated, and one issued for another tenant, user or feed, or altered in any
//! bit, fails to open: INVALID_ARGUMENT.

use mesh_core::FieldViolation;
use mesh_core::sealed::Sealer;

use crate::domain::FeedName;

/// Seals and opens page tokens with one key.
#[derive(Debug, Clone)]
pub struct PageTokens {
    sealer: Sealer,
}

impl PageTokens {
    /// Tokens under `key` (32 bytes).
    pub fn new(key: [u8; 32]) -> Self {
        Self { sealer: Sealer::new(key) }
    }

    /// Tokens under a random key (valid only in this process).
    pub fn random() -> Self {
        Self { sealer: Sealer::random() }
    }

    /// Tokens under `key`: 32 bytes in URL-safe base64 without padding (`feed.page_token_key`).
    pub fn from_base64(key: &str) -> Option<Self> {
        Some(Self { sealer: Sealer::from_base64(key)? })
    }

    /// The token continuing after `offset` in `feed`, for `user` of `tenant`.
    pub fn seal(&self, tenant: &str, user: &str, feed: &FeedName, offset: u64) -> String {
        self.sealer.seal(&associated(tenant, user, feed), &offset.to_be_bytes())
    }

    /// The offset in a token of request field `field`, if it was issued for exactly this
    /// tenant, user and feed and is unaltered.
    pub fn open(
        &self,
        raw: &str,
        field: &str,
        tenant: &str,
        user: &str,
        feed: &FeedName,
    ) -> Result<u64, FieldViolation> {
        let invalid = || FieldViolation::new(field, "is not a page token of this feed for this caller");
        let plain = self.sealer.open(raw, &associated(tenant, user, feed)).ok_or_else(invalid)?;
        let offset: [u8; 8] = plain.try_into().map_err(|_| invalid())?;
        Ok(u64::from_be_bytes(offset))
    }
}

fn associated(tenant: &str, user: &str, feed: &FeedName) -> String {
    format!("mesh.feed.v1 page\0{tenant}\0{user}\0{feed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_for_its_tenant_user_and_feed_and_unaltered() {
        let tokens = PageTokens::random();
        let global = FeedName::Global;
        let token = tokens.seal("acme", "alice", &global, 1234);
        assert_eq!(tokens.open(&token, "page_token", "acme", "alice", &global).unwrap(), 1234);
        assert!(!token.contains("1234"), "the cursor is not readable");
        for (tenant, user, feed) in [
            ("other", "alice", global.clone()),
            ("acme", "bob", global.clone()),
            ("acme", "alice", FeedName::actor("alice")),
        ] {
            assert_eq!(tokens.open(&token, "page_token", tenant, user, &feed).unwrap_err().field, "page_token");
        }
        let mut altered = token.clone().into_bytes();
        altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(tokens.open(&altered, "page_token", "acme", "alice", &global).is_err());
        assert!(PageTokens::random().open(&token, "page_token", "acme", "alice", &global).is_err(), "another key");
        assert!(tokens.open("garbage!", "page_token", "acme", "alice", &global).is_err());
    }
}
