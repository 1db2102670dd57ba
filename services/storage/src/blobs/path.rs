//! [`ObjectPath`]: where a file's bytes live in the object store,
//! `tenants/<tenant>/files/<file id>`.
//!
//! The two variable segments allow only `[A-Za-z0-9_.-]` (and neither `.` nor `..`), so a path
//! needs no escaping anywhere (object store keys, URLs, file systems) and one tenant's path can
//! never name, traverse to or prefix another tenant's object.

use std::fmt;

use super::BlobError;

/// Longest tenant or file id, in bytes.
const MAX_SEGMENT: usize = 128;

/// The object of one file of one tenant: `tenants/<tenant>/files/<file id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectPath {
    path: String,
    /// Byte range of the tenant in `path`.
    tenant_end: usize,
    /// Byte offset of the file id in `path`.
    file_id_start: usize,
}

impl ObjectPath {
    /// The object of file `file_id` of `tenant`; each is 1 to 128 bytes of `[A-Za-z0-9_.-]`,
    /// not `.` or `..`.
    pub fn new(tenant: &str, file_id: &str) -> Result<Self, BlobError> {
        check_segment("tenant", tenant)?;
        check_segment("file id", file_id)?;
        let path = format!("{TENANTS}/{tenant}/{FILES}/{file_id}");
        let tenant_end = TENANTS.len() + 1 + tenant.len();
        let file_id_start = tenant_end + 1 + FILES.len() + 1;
        Ok(Self { path, tenant_end, file_id_start })
    }

    /// Parses exactly `tenants/<tenant>/files/<file id>`: no leading or trailing `/`, no
    /// escapes, nothing else.
    pub fn parse(path: &str) -> Result<Self, BlobError> {
        let shape = || BlobError::Invalid("object path is not tenants/<tenant>/files/<file id>".to_owned());
        let mut segments = path.split('/');
        let (Some(TENANTS), Some(tenant), Some(FILES), Some(file_id), None) =
            (segments.next(), segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(shape());
        };
        Self::new(tenant, file_id)
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.path[TENANTS.len() + 1..self.tenant_end]
    }

    /// The file id.
    pub fn file_id(&self) -> &str {
        &self.path[self.file_id_start..]
    }

    /// The whole path, `tenants/<tenant>/files/<file id>`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The key of this object in `object_store`.
    pub(crate) fn to_store_path(&self) -> object_store::path::Path {
        // every segment is non-empty and free of `/`, `%` and other characters object_store
        // would escape, so the key is the path verbatim
        object_store::path::Path::from(self.path.as_str())
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

const TENANTS: &str = "tenants";
const FILES: &str = "files";

fn check_segment(what: &str, segment: &str) -> Result<(), BlobError> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
    if segment.is_empty()
        || segment.len() > MAX_SEGMENT
        || segment == "."
        || segment == ".."
        || !segment.bytes().all(allowed)
    {
        return Err(BlobError::Invalid(format!(
            "{what} must be 1 to {MAX_SEGMENT} characters of A-Z a-z 0-9 _ . - (not . or ..)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_built_from_tenant_and_file_id() {
        let path = ObjectPath::new("acme", "f_1-A.b").unwrap();
        assert_eq!(path.as_str(), "tenants/acme/files/f_1-A.b");
        assert_eq!(path.tenant(), "acme");
        assert_eq!(path.file_id(), "f_1-A.b");
        assert_eq!(path.to_store_path().as_ref(), "tenants/acme/files/f_1-A.b");
    }

    #[test]
    fn parse_accepts_exactly_the_shape_it_builds() {
        let path = ObjectPath::parse("tenants/t/files/x").unwrap();
        assert_eq!((path.tenant(), path.file_id()), ("t", "x"));
        assert_eq!(ObjectPath::parse(path.as_str()).unwrap(), path);
    }

    #[test]
    fn parse_rejects_every_other_shape() {
        for bad in [
            "",
            "tenants/t/files",
            "tenants/t/files/",
            "/tenants/t/files/x",
            "tenants/t/files/x/",
            "tenants/t/files/x/y",
            "tenants//files/x",
            "tenant/t/files/x",
            "tenants/t/file/x",
            "tenants/../files/x",
            "tenants/t/files/..",
            "tenants/t/files/.",
            "tenants/t%2Fu/files/x",
            "tenants/t/files/a b",
            "tenants/t/files/é",
            "tenants/t\\u/files/x",
        ] {
            assert!(ObjectPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn segments_are_limited_to_128_bytes() {
        assert!(ObjectPath::new(&"a".repeat(128), &"b".repeat(128)).is_ok());
        assert!(ObjectPath::new(&"a".repeat(129), "b").is_err());
        assert!(ObjectPath::new("a", &"b".repeat(129)).is_err());
        assert!(ObjectPath::new("", "b").is_err());
    }
}
