//! [`PageTokens`]: ListFeed's page tokens, opaque to clients: the cursor (the offset of the
//! last activity returned) sealed with ChaCha20-Poly1305 under the server's key, with the
//! caller's tenant and user and the feed as associated data. A token is therefore encrypted
//! and authenticated, and one issued for another tenant, user or feed, or altered in any
//! bit, fails to open: INVALID_ARGUMENT.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use mesh_core::FieldViolation;
use rand::RngCore as _;

use crate::domain::FeedName;

/// Seals and opens page tokens with one key.
#[derive(Clone)]
pub struct PageTokens {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

impl PageTokens {
    /// Tokens under `key` (32 bytes).
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(&Key::from(key)) }
    }

    /// Tokens under a random key (valid only in this process).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::new(key)
    }

    /// Tokens under `key`: 32 bytes in URL-safe base64 without padding (`feed.page_token_key`).
    pub fn from_base64(key: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
        Some(Self::new(bytes.try_into().ok()?))
    }

    /// The token continuing after `offset` in `feed`, for `user` of `tenant`.
    pub fn seal(&self, tenant: &str, user: &str, feed: &FeedName, offset: u64) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated(tenant, user, feed);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: &offset.to_be_bytes(), aad: aad.as_bytes() })
            .expect("sealing a page token does not fail");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
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
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        if bytes.len() < 12 {
            return Err(invalid());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| invalid())?;
        let aad = associated(tenant, user, feed);
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| invalid())?;
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
