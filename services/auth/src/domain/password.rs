//! Passwords and their Argon2id hashes.
//!
//! Hashing is deliberately slow (tens of ms with the defaults): callers run it off the async
//! workers (`tokio::task::spawn_blocking`).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash as Phc, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use mesh_core::error::FieldViolation;
use serde::{Deserialize, Serialize};

/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters of a password (a bound on the work one request can cause).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A password that meets the length rules. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// A new password (Register, ChangePassword): 12-128 characters.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let chars = raw.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(FieldViolation::new(
                field,
                format!("must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A password presented to log in: any non-empty text of at most 128 characters (a
    /// shorter one simply does not match; the length rules are for new passwords).
    pub fn presented(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() || raw.chars().count() > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(field, format!("must be 1-{MAX_PASSWORD_CHARS} characters")));
        }
        Ok(Self(raw.to_owned()))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A stored password hash: an Argon2id PHC string (`$argon2id$v=19$m=...`), which carries its
/// own salt and parameters, so hashes made under older parameters still verify.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// A hash read back from a store.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Argon2id cost parameters (server configuration). The defaults follow the OWASP password
/// storage guidance: 19 MiB of memory, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory per hash, KiB (at least 8 per lane).
    pub memory_kib: u32,
    /// Passes over the memory (at least 1).
    pub iterations: u32,
    /// Lanes (at least 1).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl From<mesh_core::config::PasswordHashSettings> for Argon2Params {
    fn from(settings: mesh_core::config::PasswordHashSettings) -> Self {
        Self { memory_kib: settings.memory_kib, iterations: settings.iterations, parallelism: settings.parallelism }
    }
}

impl Argon2Params {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map(drop)
            .map_err(|error| format!("argon2 parameters (memory_kib, iterations, parallelism) are invalid: {error}"))
    }
}

/// Hashes and verifies passwords with Argon2id. Verifying against an unknown account uses
/// [`verify_nothing`](Self::verify_nothing), which costs the same as a real check, so a wrong
/// email and a wrong password take similar time.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    dummy: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", self.argon.params()).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `params` (validated: see [`Argon2Params::validate`]).
    pub fn new(params: Argon2Params) -> Result<Self, String> {
        params.validate()?;
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|error| error.to_string())?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy =
            argon.hash_password(b"not a password of anybody", &salt).map_err(|error| error.to_string())?.to_string();
        Ok(Self { argon, dummy })
    }

    /// A new salted hash of `password`.
    pub fn hash(&self, password: &Password) -> PasswordHash {
        let salt = SaltString::generate(&mut OsRng);
        let phc = self.argon.hash_password(password.as_bytes(), &salt).expect("valid parameters hash any password");
        PasswordHash(phc.to_string())
    }

    /// Whether `password` matches `hash` (in constant time for the comparison). A stored
    /// hash that cannot be read matches nothing.
    pub fn verify(&self, password: &Password, hash: &PasswordHash) -> bool {
        Phc::new(&hash.0).is_ok_and(|phc| self.argon.verify_password(password.as_bytes(), &phc).is_ok())
    }

    /// Runs a verification against a dummy hash and returns `false`: the path for an unknown
    /// account, as slow as a real check.
    pub fn verify_nothing(&self, password: &Password) -> bool {
        let phc = Phc::new(&self.dummy).expect("the dummy hash is a PHC string");
        std::hint::black_box(self.argon.verify_password(password.as_bytes(), &phc).is_ok());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap()
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_is_salted() {
        let hasher = cheap();
        let password = Password::parse("correct horse battery", "password").unwrap();
        let hash = hasher.hash(&password);
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{}", hash.as_str());
        assert!(hasher.verify(&password, &hash));
        assert!(!hasher.verify(&Password::presented("correct horse battery!", "p").unwrap(), &hash));
        assert_ne!(hasher.hash(&password), hash, "every hash has its own salt");
        assert!(!hasher.verify(&password, &PasswordHash::from_stored("garbage".into())));
        assert!(!hasher.verify_nothing(&password));
    }

    #[test]
    fn hashes_made_under_other_parameters_still_verify() {
        let password = Password::parse("correct horse battery", "password").unwrap();
        let old = cheap().hash(&password);
        let newer = PasswordHasher::new(Argon2Params { memory_kib: 128, iterations: 2, parallelism: 1 }).unwrap();
        assert!(newer.verify(&password, &old));
    }

    #[test]
    fn new_passwords_need_12_to_128_characters() {
        assert!(Password::parse("short", "password").is_err());
        assert!(Password::parse(&"é".repeat(12), "password").is_ok(), "characters, not bytes");
        assert!(Password::parse(&"x".repeat(129), "password").is_err());
        assert!(Password::presented("", "password").is_err());
        assert!(Password::presented("short", "password").is_ok());
        assert_eq!(format!("{:?}", Password::parse("correct horse battery", "p").unwrap()), "Password(..)");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Argon2Params { memory_kib: 1, iterations: 1, parallelism: 1 }.validate().is_err());
        assert!(Argon2Params { memory_kib: 64, iterations: 0, parallelism: 1 }.validate().is_err());
        assert!(Argon2Params::default().validate().is_ok());
    }
}
