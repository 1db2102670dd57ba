//! [`Email`]: an account's email address, unique per tenant case-insensitively.

use mesh_core::error::FieldViolation;

/// Longest accepted email address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// A syntactically valid email address as the user typed it, with its normalized form
/// (lowercase) under which it is unique in a tenant.
///
/// The check is deliberately plain: one `@`, a non-empty local part of at most 64 bytes, a
/// domain of dot-separated labels of letters, digits and hyphens (no leading or trailing
/// hyphen), no whitespace or control characters. Whether the address receives mail is not
/// this type's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    original: String,
    normalized: String,
}

impl Email {
    /// Parses `raw` (leading and trailing whitespace trimmed); `field` names the request
    /// field in the violation.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let value = raw.trim();
        let invalid = |why: &str| FieldViolation::new(field, why);
        if value.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if value.len() > MAX_EMAIL_LEN {
            return Err(invalid(&format!("must be at most {MAX_EMAIL_LEN} bytes")));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(invalid("must be an email address (local@domain)"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(invalid("must have one `@` after a local part of 1-64 bytes"));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !domain.contains('.') || !domain.split('.').all(label_ok) {
            return Err(invalid("must have a domain such as example.com after the `@`"));
        }
        Ok(Self { original: value.to_owned(), normalized: value.to_lowercase() })
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The form under which the address is unique in a tenant: lowercase.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_case_insensitively_and_keep_their_spelling() {
        let email = Email::parse("  Alice.Smith@Example.COM ", "email").unwrap();
        assert_eq!(email.as_str(), "Alice.Smith@Example.COM");
        assert_eq!(email.normalized(), "alice.smith@example.com");
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_field_named() {
        for bad in
            ["", "alice", "@example.com", "alice@", "alice@example", "a b@example.com", "alice@-x.com", "a@b@c.com"]
        {
            let violation = Email::parse(bad, "email").unwrap_err();
            assert_eq!(violation.field, "email", "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long, "email").is_err());
    }
}
