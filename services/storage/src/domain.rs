//! The pure types and rules of Storage: file metadata, its life cycle and the limits of an
//! upload. No I/O, no transport types.

use std::time::{Duration, SystemTime};

use mesh_core::documents::whole_micros;

use mesh_core::FieldViolation;
pub use mesh_core::config::UploadLimits;
use serde::{Deserialize, Serialize};

/// Longest file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest content type, in characters.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// A file's id: 128 random bits as 22 characters of URL-safe base64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(String);

impl FileId {
    /// A new random id.
    pub fn random() -> Self {
        Self(mesh_core::auth::random_id())
    }

    /// Reads request field `field`: exactly what [`random`](Self::random) produces.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if mesh_core::auth::is_random_id(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(field, "must be a file id (22 characters of URL-safe base64)"))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a file is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileStatus {
    /// Metadata saved, bytes not confirmed yet.
    Pending,
    /// Bytes verified; downloadable.
    Ready,
    /// The upload failed; see the failure.
    Failed,
    /// Deleted (only in changes).
    Deleted,
}

impl FileStatus {
    /// The stored spelling, e.g. `PENDING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Deleted => "DELETED",
        }
    }
}

/// Why an upload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    /// The stored object's size differs from the declared one.
    SizeMismatch,
    /// The stored object's SHA-256 differs from the declared one.
    ChecksumMismatch,
    /// The upload was not completed in time.
    UploadExpired,
}

/// A failed upload: the reason and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// E.g. `declared 1024 bytes, stored 1000`.
    pub message: String,
}

/// The metadata of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The id.
    pub id: FileId,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The user who created the upload.
    pub owner: String,
    /// What the upload declared.
    pub upload: NewUpload,
    /// Where it is in its life cycle.
    pub status: FileStatus,
    /// Set only when FAILED.
    pub failure: Option<Failure>,
    /// 1 on creation, +1 per status change.
    pub version: i64,
    /// When CreateUpload saved it.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// When its upload URL stops working.
    pub upload_expires_at: SystemTime,
}

impl FileRecord {
    /// A new PENDING file whose upload URL works until `upload_expires_at`.
    pub fn pending(
        tenant: &str,
        owner: &str,
        upload: NewUpload,
        now: SystemTime,
        upload_expires_at: SystemTime,
    ) -> Self {
        let now = whole_micros(now);
        let upload_expires_at = whole_micros(upload_expires_at);
        Self {
            id: FileId::random(),
            tenant: tenant.to_owned(),
            owner: owner.to_owned(),
            upload,
            status: FileStatus::Pending,
            failure: None,
            version: 1,
            created_at: now,
            updated_at: now,
            upload_expires_at,
        }
    }

    /// The file after a status change at `now`.
    pub fn changed(&self, status: FileStatus, failure: Option<Failure>, now: SystemTime) -> Self {
        Self {
            status,
            failure,
            version: self.version + 1,
            updated_at: whole_micros(now).max(self.updated_at),
            ..self.clone()
        }
    }

    /// What CompleteUpload makes of a PENDING file whose object holds `stored_size` bytes
    /// with SHA-256 `stored_sha256` (asked for only when one was declared).
    pub fn verified(&self, stored_size: u64, stored_sha256: Option<&str>, now: SystemTime) -> Self {
        if stored_size != self.upload.size {
            let message = format!("declared {} bytes, stored {stored_size}", self.upload.size);
            return self.changed(
                FileStatus::Failed,
                Some(Failure { reason: FailureReason::SizeMismatch, message }),
                now,
            );
        }
        if let (Some(declared), Some(stored)) = (&self.upload.sha256, stored_sha256)
            && declared != stored
        {
            let message = format!("declared SHA-256 {declared}, stored {stored}");
            return self.changed(
                FileStatus::Failed,
                Some(Failure { reason: FailureReason::ChecksumMismatch, message }),
                now,
            );
        }
        self.changed(FileStatus::Ready, None, now)
    }

    /// Whether the upload was left PENDING past its URL's expiry plus `grace` at `now`.
    pub fn is_abandoned(&self, grace: Duration, now: SystemTime) -> bool {
        self.status == FileStatus::Pending && self.upload_expires_at + grace <= now
    }
}

/// What CreateUpload declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpload {
    /// 1-255 UTF-8 bytes, no control characters, no `/` or `\`.
    pub file_name: String,
    /// A MIME type in the tenant's allow-list.
    pub content_type: String,
    /// The exact size in bytes.
    pub size: u64,
    /// The SHA-256 as 64 lowercase hex digits, if declared.
    pub sha256: Option<String>,
}

/// Whether `limits` allow `content_type` (its essence, without parameters, compared
/// case-insensitively with each allowed pattern).
fn allows(limits: &UploadLimits, content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let (kind, _) = essence.split_once('/').unwrap_or((&essence, ""));
    limits.content_types.iter().any(|allowed| {
        let allowed = allowed.to_ascii_lowercase();
        allowed == "*/*" || allowed == essence || allowed.strip_suffix("/*").is_some_and(|prefix| prefix == kind)
    })
}

impl NewUpload {
    /// Checks a CreateUpload request against the rules and `limits`; every broken rule is a
    /// field violation.
    pub fn parse(
        file_name: &str,
        content_type: &str,
        size: i64,
        sha256: &str,
        limits: &UploadLimits,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        if file_name.is_empty() || file_name.len() > MAX_FILE_NAME_BYTES {
            violations.push(FieldViolation::new("file_name", format!("must be 1 to {MAX_FILE_NAME_BYTES} bytes")));
        } else if file_name.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
            violations.push(FieldViolation::new("file_name", "must not hold control characters, '/' or '\\'"));
        }
        if !is_mime_type(content_type) {
            violations.push(FieldViolation::new(
                "content_type",
                format!("must be a MIME type such as image/png, at most {MAX_CONTENT_TYPE_LEN} characters"),
            ));
        } else if !allows(limits, content_type) {
            violations.push(FieldViolation::new(
                "content_type",
                format!("is not allowed; allowed: {}", limits.content_types.join(", ")),
            ));
        }
        if size < 0 || size as u64 > limits.max_size_bytes {
            violations.push(FieldViolation::new("size_bytes", format!("must be 0 to {} bytes", limits.max_size_bytes)));
        }
        let sha256 = match sha256 {
            "" => None,
            hex if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                Some(hex.to_owned())
            }
            _ => {
                violations.push(FieldViolation::new("sha256", "must be 64 lowercase hex digits, or empty"));
                None
            }
        };
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self { file_name: file_name.to_owned(), content_type: content_type.to_owned(), size: size as u64, sha256 })
    }
}

/// `type/subtype` with optional parameters, printable ASCII, no spaces around the slash.
fn is_mime_type(raw: &str) -> bool {
    if raw.is_empty() || raw.len() > MAX_CONTENT_TYPE_LEN || !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let essence = raw.split(';').next().unwrap_or_default();
    let token =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    matches!(essence.split_once('/'), Some((kind, subtype)) if token(kind) && token(subtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(size: u64, sha256: Option<&str>) -> NewUpload {
        NewUpload {
            file_name: "a.txt".into(),
            content_type: "text/plain".into(),
            size,
            sha256: sha256.map(str::to_owned),
        }
    }

    #[test]
    fn uploads_are_checked_against_the_rules_and_limits() {
        let limits = UploadLimits { max_size_bytes: 100, content_types: vec!["image/*".into(), "text/plain".into()] };
        assert!(NewUpload::parse("a.png", "image/png", 100, "", &limits).is_ok());
        assert!(NewUpload::parse("a.txt", "text/plain; charset=utf-8", 0, &"a".repeat(64), &limits).is_ok());
        let fields = |result: Result<NewUpload, Vec<FieldViolation>>| {
            result.unwrap_err().into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(NewUpload::parse("", "image/png", 1, "", &limits)), ["file_name"]);
        assert_eq!(fields(NewUpload::parse("a/b", "image/png", 1, "", &limits)), ["file_name"]);
        assert_eq!(fields(NewUpload::parse("a\u{7}", "image/png", 1, "", &limits)), ["file_name"]);
        assert_eq!(fields(NewUpload::parse(&"x".repeat(256), "image/png", 1, "", &limits)), ["file_name"]);
        assert_eq!(fields(NewUpload::parse("a", "application/pdf", 1, "", &limits)), ["content_type"]);
        assert_eq!(fields(NewUpload::parse("a", "not a type", 1, "", &limits)), ["content_type"]);
        assert_eq!(fields(NewUpload::parse("a", "image/png", 101, "", &limits)), ["size_bytes"]);
        assert_eq!(fields(NewUpload::parse("a", "image/png", -1, "", &limits)), ["size_bytes"]);
        assert_eq!(fields(NewUpload::parse("a", "image/png", 1, &"A".repeat(64), &limits)), ["sha256"]);
        assert_eq!(
            fields(NewUpload::parse("", "x", -1, "zz", &limits)),
            ["file_name", "content_type", "size_bytes", "sha256"]
        );
        assert!(NewUpload::parse("a", "application/pdf", 1, "", &UploadLimits::default()).is_ok());
    }

    #[test]
    fn completion_checks_size_then_checksum() {
        let now = SystemTime::now();
        let file = FileRecord::pending("acme", "alice", upload(10, Some(&"a".repeat(64))), now, now);
        let short = file.verified(9, None, now);
        assert_eq!((short.status, short.failure.unwrap().reason), (FileStatus::Failed, FailureReason::SizeMismatch));
        let wrong = file.verified(10, Some(&"b".repeat(64)), now);
        assert_eq!(wrong.failure.unwrap().reason, FailureReason::ChecksumMismatch);
        let ready = file.verified(10, Some(&"a".repeat(64)), now);
        assert_eq!((ready.status, ready.version, ready.failure), (FileStatus::Ready, 2, None));
    }

    #[test]
    fn an_upload_is_abandoned_after_its_expiry_and_grace() {
        let now = SystemTime::now();
        let file = FileRecord::pending("acme", "alice", upload(1, None), now, now + Duration::from_secs(60));
        assert!(!file.is_abandoned(Duration::from_secs(10), now + Duration::from_secs(69)));
        assert!(file.is_abandoned(Duration::from_secs(10), now + Duration::from_secs(70)));
        assert!(
            !file.changed(FileStatus::Ready, None, now).is_abandoned(Duration::ZERO, now + Duration::from_secs(999))
        );
    }
}
