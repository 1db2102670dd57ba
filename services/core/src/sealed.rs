//! [`Sealer`]: short opaque tokens (page tokens) that only this server can read and that
//! open only in the context they were issued for. The plain bytes are sealed with
//! ChaCha20-Poly1305 under the server's key and a random nonce, with the context (tenant,
//! user, list and filter) as associated data: a token is encrypted and authenticated, and one
//! issued for another context, under another key, or altered in any bit, fails to open.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;

/// Seals and opens tokens with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
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

    /// Tokens under `key`: 32 bytes in URL-safe base64 without padding (43 characters).
    pub fn from_base64(key: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
        Some(Self::new(bytes.try_into().ok()?))
    }

    /// `plain` sealed for `context`, as URL-safe base64.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad: context.as_bytes() })
            .expect("sealing a token does not fail");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The plain bytes of `token`, if it was sealed under this key for exactly `context`
    /// and is unaltered.
    pub fn open(&self, token: &str, context: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        self.cipher.decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: context.as_bytes() }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_in_its_context_under_its_key_and_unaltered() {
        let sealer = Sealer::random();
        let token = sealer.seal("acme/alice", b"cursor 1234");
        assert_eq!(sealer.open(&token, "acme/alice").as_deref(), Some(&b"cursor 1234"[..]));
        assert!(!token.contains("1234"));
        assert_eq!(sealer.open(&token, "acme/bob"), None);
        let mut altered = token.clone().into_bytes();
        altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(sealer.open(&String::from_utf8(altered).unwrap(), "acme/alice"), None);
        assert_eq!(Sealer::random().open(&token, "acme/alice"), None);
        assert_eq!(sealer.open("garbage!", "acme/alice"), None);
        assert_eq!(sealer.open("", "acme/alice"), None);
    }
}
