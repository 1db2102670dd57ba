//! [`LocalSigning`]: the signed URLs of the stores that meshd serves itself (memory and local
//! folder), HMAC-SHA256 under a server key.
//!
//! A URL is `{base_url}/blobs/{object path}?{query}`. The query carries every signed value
//! and the signature; the canonical string that is signed is one value per line:
//!
//! ```text
//! MESH-BLOB-HMAC-SHA256-V1        version tag
//! PUT                             the method: PUT (upload) or GET (download)
//! tenants/acme/files/f1           the object path
//! 1767225600                      expiry, unix seconds (valid while now < expiry)
//! 11                              PUT: Content-Length | GET: the download's file name
//! text/plain                      PUT: Content-Type   | GET: the download's Content-Type
//! <64 hex digits or empty>        PUT only: the declared SHA-256
//! ```
//!
//! No value may hold a control character (checked when signing and when verifying) and each
//! method has a fixed number of lines, so two different requests never share a canonical
//! string. Verification recomputes the MAC and compares in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

use super::path::ObjectPath;
use super::{SignedUrl, UploadSpec};

/// Signs and verifies the URLs of the memory and local-folder stores.
#[derive(Clone)]
pub struct LocalSigning {
    key: [u8; 32],
    base_url: String,
}

impl std::fmt::Debug for LocalSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigning").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl LocalSigning {
    /// URLs under `base_url` (scheme, host and port meshd is reached at, e.g.
    /// `http://127.0.0.1:50051`; a trailing `/` is dropped), signed with `key`.
    pub fn new(key: [u8; 32], base_url: String) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self { key, base_url }
    }

    /// URLs signed with a random key: valid only on this process.
    pub fn random(base_url: String) -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::new(key, base_url)
    }

    /// URLs signed with `key`: 32 bytes in URL-safe base64 without padding (43 characters).
    pub fn from_base64(key: &str, base_url: String) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
        Some(Self::new(bytes.try_into().ok()?, base_url))
    }

    /// The base URL the signed URLs start with.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A PUT URL for `path` that accepts exactly the bytes `spec` describes until `ttl` from
    /// now. The caller has validated `spec`.
    pub(crate) fn upload_url(&self, path: &ObjectPath, spec: &UploadSpec, ttl: Duration) -> SignedUrl {
        let (expires, expires_at) = expiry(ttl);
        let grant =
            Grant::Upload { size: spec.size, content_type: spec.content_type.clone(), sha256: spec.sha256.clone() };
        let headers = vec![
            ("Content-Type".to_owned(), spec.content_type.clone()),
            ("Content-Length".to_owned(), spec.size.to_string()),
        ];
        SignedUrl { url: self.url(path, expires, &grant), expires_at, headers }
    }

    /// A GET URL for `path` whose response carries `file_name` and `content_type`, valid
    /// until `ttl` from now. The caller has validated both.
    pub(crate) fn download_url(
        &self,
        path: &ObjectPath,
        file_name: &str,
        content_type: &str,
        ttl: Duration,
    ) -> SignedUrl {
        let (expires, expires_at) = expiry(ttl);
        let grant = Grant::Download { file_name: file_name.to_owned(), content_type: content_type.to_owned() };
        SignedUrl { url: self.url(path, expires, &grant), expires_at, headers: Vec::new() }
    }

    /// What the URL with `query` allows on `path`, if it was signed by this key and has not
    /// expired at `now`.
    pub(crate) fn verify(&self, path: &ObjectPath, query: &str, now: SystemTime) -> Result<Grant, Denied> {
        let signed = SignedQuery::parse(query).ok_or(Denied::Signature)?;
        let signature = URL_SAFE_NO_PAD.decode(&signed.signature).map_err(|_| Denied::Signature)?;
        let mut mac = self.mac();
        mac.update(canonical(path, signed.expires, &signed.grant).as_bytes());
        mac.verify_slice(&signature).map_err(|_| Denied::Signature)?;
        if unix_seconds(now) >= signed.expires {
            return Err(Denied::Expired);
        }
        Ok(signed.grant)
    }

    fn url(&self, path: &ObjectPath, expires: u64, grant: &Grant) -> String {
        let mut mac = self.mac();
        mac.update(canonical(path, expires, grant).as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("method", grant.method());
        query.append_pair("expires", &expires.to_string());
        match grant {
            Grant::Upload { size, content_type, sha256 } => {
                query.append_pair("size", &size.to_string());
                query.append_pair("type", content_type);
                if let Some(sha256) = sha256 {
                    query.append_pair("sha256", sha256);
                }
            }
            Grant::Download { file_name, content_type } => {
                query.append_pair("name", file_name);
                query.append_pair("type", content_type);
            }
        }
        query.append_pair("signature", &signature);
        format!("{}/blobs/{path}?{}", self.base_url, query.finish())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }
}

/// What a verified URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A PUT of exactly `size` bytes sent as `content_type` (and hashing to `sha256`).
    Upload { size: u64, content_type: String, sha256: Option<String> },
    /// A GET whose response is an attachment named `file_name` of type `content_type`.
    Download { file_name: String, content_type: String },
}

impl Grant {
    /// The HTTP method the grant was signed for.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::Upload { .. } => "PUT",
            Self::Download { .. } => "GET",
        }
    }
}

/// Why a URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Malformed, altered, for another path, or signed with another key.
    Signature,
    /// Past its expiry.
    Expired,
}

/// The version tag that opens every canonical string.
const VERSION: &str = "MESH-BLOB-HMAC-SHA256-V1";

/// The string the signature covers (see the module documentation).
fn canonical(path: &ObjectPath, expires: u64, grant: &Grant) -> String {
    let head = format!("{VERSION}\n{}\n{path}\n{expires}", grant.method());
    match grant {
        Grant::Upload { size, content_type, sha256 } => {
            format!("{head}\n{size}\n{content_type}\n{}", sha256.as_deref().unwrap_or(""))
        }
        Grant::Download { file_name, content_type } => format!("{head}\n{file_name}\n{content_type}"),
    }
}

/// The decoded query of a signed URL.
struct SignedQuery {
    expires: u64,
    grant: Grant,
    signature: String,
}

impl SignedQuery {
    /// `None` unless the query holds exactly the parameters of one kind of grant, each once,
    /// with no control characters.
    fn parse(query: &str) -> Option<Self> {
        let mut method = None;
        let mut expires = None;
        let mut size = None;
        let mut content_type = None;
        let mut sha256 = None;
        let mut file_name = None;
        let mut signature = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if value.chars().any(char::is_control) {
                return None;
            }
            let slot = match &*name {
                "method" => &mut method,
                "expires" => &mut expires,
                "size" => &mut size,
                "type" => &mut content_type,
                "sha256" => &mut sha256,
                "name" => &mut file_name,
                "signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(value.into_owned()).is_some() {
                return None;
            }
        }
        let grant = match (method?.as_str(), size, file_name) {
            ("PUT", Some(size), None) => {
                Grant::Upload { size: parse_decimal(&size)?, content_type: content_type?, sha256 }
            }
            ("GET", None, Some(file_name)) if sha256.is_none() => {
                Grant::Download { file_name, content_type: content_type? }
            }
            _ => return None,
        };
        Some(Self { expires: parse_decimal(&expires?)?, grant, signature: signature? })
    }
}

/// A canonical decimal number: digits only, no sign, no leading zero.
fn parse_decimal(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// The expiry of a URL signed now with `ttl`: unix seconds, and as a time.
/// The expiry of a URL signed now for `ttl`, in whole seconds, rounded up so that the URL
/// works for at least `ttl` (a zero `ttl` gives a URL that has expired already).
fn expiry(ttl: Duration) -> (u64, SystemTime) {
    let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(ttl);
    let round_up = !ttl.is_zero() && end.subsec_nanos() > 0;
    let expires = end.as_secs().saturating_add(u64::from(round_up));
    (expires, UNIX_EPOCH + Duration::from_secs(expires))
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing() -> LocalSigning {
        LocalSigning::new([7; 32], "http://127.0.0.1:8080/".to_owned())
    }

    fn path() -> ObjectPath {
        ObjectPath::new("acme", "f1").unwrap()
    }

    fn query(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    fn spec() -> UploadSpec {
        UploadSpec { content_type: "text/plain".to_owned(), size: 11, sha256: Some("ab".repeat(32)) }
    }

    #[test]
    fn the_canonical_string_lists_every_signed_value_on_its_own_line() {
        let upload = Grant::Upload { size: 11, content_type: "text/plain".to_owned(), sha256: None };
        assert_eq!(
            canonical(&path(), 1_767_225_600, &upload),
            "MESH-BLOB-HMAC-SHA256-V1\nPUT\ntenants/acme/files/f1\n1767225600\n11\ntext/plain\n"
        );
        let download = Grant::Download { file_name: "a b.txt".to_owned(), content_type: "text/plain".to_owned() };
        assert_eq!(
            canonical(&path(), 5, &download),
            "MESH-BLOB-HMAC-SHA256-V1\nGET\ntenants/acme/files/f1\n5\na b.txt\ntext/plain"
        );
    }

    #[test]
    fn an_upload_url_verifies_into_its_grant_until_it_expires() {
        let signed = signing().upload_url(&path(), &spec(), Duration::from_secs(60));
        assert!(signed.url.starts_with("http://127.0.0.1:8080/blobs/tenants/acme/files/f1?method=PUT&expires="));
        let expected = Grant::Upload { size: 11, content_type: "text/plain".to_owned(), sha256: spec().sha256 };
        let now = SystemTime::now();
        assert_eq!(signing().verify(&path(), query(&signed.url), now), Ok(expected));
        assert_eq!(signing().verify(&path(), query(&signed.url), signed.expires_at), Err(Denied::Expired));
    }

    #[test]
    fn a_download_url_carries_the_file_name_and_type() {
        let signed = signing().download_url(&path(), "résumé & co.pdf", "application/pdf", Duration::from_secs(60));
        let grant = signing().verify(&path(), query(&signed.url), SystemTime::now()).unwrap();
        assert_eq!(
            grant,
            Grant::Download { file_name: "résumé & co.pdf".to_owned(), content_type: "application/pdf".to_owned() }
        );
    }

    #[test]
    fn any_change_to_the_url_breaks_the_signature() {
        let signed = signing().upload_url(&path(), &spec(), Duration::from_secs(60));
        let query = query(&signed.url);
        let now = SystemTime::now();
        let other_path = ObjectPath::new("other", "f1").unwrap();
        assert_eq!(signing().verify(&other_path, query, now), Err(Denied::Signature));
        let other_key = LocalSigning::new([8; 32], "http://127.0.0.1:8080".to_owned());
        assert_eq!(other_key.verify(&path(), query, now), Err(Denied::Signature));
        for (from, to) in [
            ("size=11", "size=12"),
            ("size=11", "size=011"),
            ("method=PUT", "method=GET"),
            ("text%2Fplain", "text%2Fhtml"),
        ] {
            let altered = query.replacen(from, to, 1);
            assert_ne!(altered, query);
            assert_eq!(signing().verify(&path(), &altered, now), Err(Denied::Signature), "{from} -> {to}");
        }
        let expires = query.split('&').find(|pair| pair.starts_with("expires=")).unwrap();
        let later = format!("expires={}", parse_decimal(&expires[8..]).unwrap() + 1);
        assert_eq!(signing().verify(&path(), &query.replacen(expires, &later, 1), now), Err(Denied::Signature));
        let without_sha = query.split('&').filter(|pair| !pair.starts_with("sha256=")).collect::<Vec<_>>().join("&");
        assert_eq!(signing().verify(&path(), &without_sha, now), Err(Denied::Signature));
        assert_eq!(signing().verify(&path(), &format!("{query}&extra=1"), now), Err(Denied::Signature));
        assert_eq!(signing().verify(&path(), &format!("{query}&size=11"), now), Err(Denied::Signature));
    }

    #[test]
    fn control_characters_in_the_query_are_refused() {
        let mut download = signing().download_url(&path(), "a", "text/plain", Duration::from_secs(60)).url;
        download = download.replacen("name=a", "name=a%0Atext%2Fplain", 1);
        assert_eq!(signing().verify(&path(), query(&download), SystemTime::now()), Err(Denied::Signature));
    }

    #[test]
    fn a_key_is_read_from_43_characters_of_base64url() {
        let key = URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(key.len(), 43);
        assert!(LocalSigning::from_base64(&key, String::new()).is_some());
        assert!(LocalSigning::from_base64(&key[..42], String::new()).is_none());
        assert!(LocalSigning::from_base64("hunter2", String::new()).is_none());
        assert!(!format!("{:?}", LocalSigning::new([9; 32], "http://x".to_owned())).contains("9, 9"));
    }
}
