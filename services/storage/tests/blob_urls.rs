//! The S3 store's signed URLs, checked for real.
//!
//! moto (`moto[server]` from PyPI) does not verify presigned URLs: with authentication off it
//! accepts any signature, and with it on (`INITIAL_NO_AUTH_ACTION_COUNT`) it reads only the
//! `Authorization` header and fails every presigned request with a 500. So the signatures are
//! checked by an independent SigV4 query-string verifier written here from AWS's
//! specification, which first reproduces AWS's published presigned-URL example exactly; moto
//! then shows that the URLs work against an S3 API end to end (upload, head, hash,
//! download with the signed response headers, the create-only precondition, delete). moto
//! does not check `x-amz-checksum-sha256` against the body either; that binding is checked
//! by the verifier (the header is signed) and, on AWS, by S3 itself.
//!
//! The moto server is this test's own, on a free port, stopped when the test ends;
//! `scripts/install-moto` installs it into `.tools/moto-venv` when it is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_core::config::Secret;
use mesh_storage::blobs::{Blobs, ObjectPath, S3Settings, UploadSpec};
use sha2::{Digest as _, Sha256};
use tokio::process::{Child, Command};

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const BUCKET: &str = "mesh-files";
const TTL: Duration = Duration::from_secs(600);

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn the_verifier_reproduces_the_aws_presigned_url_example() {
    // "Example: presigned URL" of AWS's "Authenticating Requests: Using Query Parameters
    // (AWS Signature Version 4)"
    let url = "https://examplebucket.s3.amazonaws.com/test.txt\
        ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let at_signing = 1_369_353_600; // 2013-05-24T00:00:00Z

    let checked = sigv4::verify("GET", url, &[], at_signing).unwrap();

    assert_eq!(
        checked.canonical_request,
        "GET\n/test.txt\n\
         X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
         host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&checked.canonical_request)),
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    );
    assert_eq!(checked.signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    // one digit off, or a day too late, and it is refused
    let altered = url.replace("aeeed9bb", "aeeed9bc");
    assert_eq!(sigv4::verify("GET", &altered, &[], at_signing).unwrap_err(), sigv4::Refused::SignatureMismatch);
    assert_eq!(sigv4::verify("GET", url, &[], at_signing + 86_401).unwrap_err(), sigv4::Refused::Expired);
}

#[tokio::test]
async fn an_s3_upload_url_binds_path_method_headers_and_expiry() {
    let blobs = s3_blobs("http://127.0.0.1:9");
    let file = ObjectPath::new("acme", "f1").unwrap();
    let bytes = b"hello, bucket".to_vec();
    let signed = blobs.upload_url(&file, &spec_of(&bytes), TTL).await.unwrap();
    let now = unix_now();

    let checked = sigv4::verify("PUT", &signed.url, &signed.headers, now).unwrap();

    assert!(signed.url.starts_with("http://127.0.0.1:9/mesh-files/tenants/acme/files/f1?"), "{}", signed.url);
    assert_eq!(checked.signed_headers, "content-type;host;if-none-match;x-amz-checksum-sha256");
    assert_eq!(
        signed.headers,
        [
            ("Content-Type".to_owned(), "text/plain; charset=utf-8".to_owned()),
            ("Content-Length".to_owned(), "13".to_owned()),
            ("If-None-Match".to_owned(), "*".to_owned()),
            ("x-amz-checksum-sha256".to_owned(), base64_sha256(&bytes)),
        ]
    );
    let refused = |method: &str, url: &str, headers: &[(String, String)], at: u64| {
        sigv4::verify(method, url, headers, at).unwrap_err()
    };
    use sigv4::Refused::{Expired, MissingHeader, SignatureMismatch};
    let (unsigned, signature) = signed.url.rsplit_once("X-Amz-Signature=").unwrap();
    let flipped =
        format!("{unsigned}X-Amz-Signature={}{}", if signature.starts_with('0') { '1' } else { '0' }, &signature[1..]);
    assert_eq!(refused("PUT", &flipped, &signed.headers, now), SignatureMismatch);
    assert_eq!(refused("GET", &signed.url, &signed.headers, now), SignatureMismatch);
    let other_tenant = signed.url.replacen("/tenants/acme/", "/tenants/evil/", 1);
    assert_eq!(refused("PUT", &other_tenant, &signed.headers, now), SignatureMismatch);
    let mut html = signed.headers.clone();
    html[0].1 = "text/html".to_owned();
    assert_eq!(refused("PUT", &signed.url, &html, now), SignatureMismatch);
    let mut other_bytes = signed.headers.clone();
    other_bytes[3].1 = base64_sha256(b"other bytes");
    assert_eq!(refused("PUT", &signed.url, &other_bytes, now), SignatureMismatch);
    assert_eq!(refused("PUT", &signed.url, &signed.headers[..2], now), MissingHeader("if-none-match".to_owned()));
    assert_eq!(refused("PUT", &signed.url, &signed.headers, now + TTL.as_secs() + 2), Expired);
    let expired = blobs.upload_url(&file, &spec_of(&bytes), Duration::ZERO).await.unwrap();
    assert_eq!(refused("PUT", &expired.url, &expired.headers, now + 2), Expired);
}

#[tokio::test]
async fn an_s3_download_url_signs_the_attachment_headers_it_asks_for() {
    let blobs = s3_blobs("http://127.0.0.1:9");
    let file = ObjectPath::new("acme", "f1").unwrap();
    let name = "Résumé \"final\"; 100% (v2).txt";

    let signed = blobs.download_url(&file, name, "text/plain", TTL).await.unwrap();
    let checked = sigv4::verify("GET", &signed.url, &signed.headers, unix_now()).unwrap();

    assert!(signed.headers.is_empty());
    assert_eq!(checked.signed_headers, "host");
    assert_eq!(checked.query.get("response-content-type").map(String::as_str), Some("text/plain"));
    assert_eq!(
        checked.query.get("response-content-disposition").map(String::as_str),
        Some(
            "attachment; filename=\"R_sum_ _final_; 100% (v2).txt\"; \
             filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22%3B%20100%25%20%28v2%29.txt"
        )
    );
    let as_inline = signed.url.replace("attachment", "inline");
    assert_eq!(sigv4::verify("GET", &as_inline, &[], unix_now()).unwrap_err(), sigv4::Refused::SignatureMismatch);
    assert!(blobs.routes(std::sync::Arc::new(NoGate), 1).is_none(), "S3 URLs point at the bucket, not at meshd");
}

#[tokio::test]
async fn s3_urls_upload_and_download_through_an_s3_api() {
    let moto = Moto::start().await;
    let http = client();
    let (status, body, _) = send(&http, Method::PUT, &format!("{}/{BUCKET}", moto.url()), &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "create bucket: {}", String::from_utf8_lossy(&body));
    let blobs = s3_blobs(&moto.url());
    let file = ObjectPath::new("acme", "f1").unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(blobs.head(&file).await.unwrap(), None);

    let upload = blobs.upload_url(&file, &spec_of(&bytes), TTL).await.unwrap();
    sigv4::verify("PUT", &upload.url, &upload.headers, unix_now()).unwrap();
    let (status, body, _) = send(&http, Method::PUT, &upload.url, &upload.headers, bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "upload: {}", String::from_utf8_lossy(&body));

    assert_eq!(blobs.head(&file).await.unwrap().map(|info| info.size), Some(100_000));
    assert_eq!(blobs.sha256_hex(&file).await.unwrap(), Some(hex::encode(Sha256::digest(&bytes))));
    let download = blobs.download_url(&file, "Résumé.bin", "application/octet-stream", TTL).await.unwrap();
    sigv4::verify("GET", &download.url, &download.headers, unix_now()).unwrap();
    let (status, body, headers) = send(&http, Method::GET, &download.url, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bytes);
    // the bucket answers with the headers the URL signed
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"R_sum_.bin\"; filename*=UTF-8''R%C3%A9sum%C3%A9.bin"
    );

    // the signed If-None-Match: * makes the URL create-only
    let (status, _, _) = send(&http, Method::PUT, &upload.url, &upload.headers, bytes.clone()).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);

    blobs.delete(&file).await.unwrap();
    assert_eq!(blobs.head(&file).await.unwrap(), None);
    assert_eq!(blobs.sha256_hex(&file).await.unwrap(), None);
    blobs.delete(&file).await.unwrap();
    moto.stop().await;
}

// ---- fixtures ------------------------------------------------------------------------------

struct NoGate;

impl mesh_storage::blobs::UploadGate for NoGate {
    fn allows<'a>(
        &'a self,
        _path: &'a ObjectPath,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, mesh_core::Error>> + Send + 'a>> {
        Box::pin(async { Ok(false) })
    }
}

fn s3_blobs(endpoint: &str) -> Blobs {
    Blobs::s3(&S3Settings {
        bucket: BUCKET.to_owned(),
        region: Some(REGION.to_owned()),
        endpoint: Some(endpoint.to_owned()),
        access_key_id: Some(ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(Secret::new(SECRET_ACCESS_KEY.to_owned())),
        allow_http: true,
    })
    .unwrap()
}

fn spec_of(bytes: &[u8]) -> UploadSpec {
    UploadSpec {
        content_type: "text/plain; charset=utf-8".to_owned(),
        size: bytes.len() as u64,
        sha256: Some(hex::encode(Sha256::digest(bytes))),
    }
}

fn base64_sha256(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request as a plain HTTP client would; the status, headers and body.
async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (StatusCode, Bytes, HeaderMap) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = client.request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, body.collect().await.unwrap().to_bytes(), parts.headers)
}

/// A private moto S3 server on a free port of 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Moto {
    async fn start() -> Self {
        let binary = moto_server().await;
        let dir = tempfile::tempdir().unwrap();
        let http = client();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = dir.path().join(format!("moto-{port}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
            // poll with a deadline until it answers, or exits (its port may have been taken)
            let deadline = Instant::now() + Duration::from_secs(60);
            let url = format!("http://127.0.0.1:{port}/moto-api/");
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(text.contains("Address already in use"), "moto_server exited ({status}):\n{text}");
                    break;
                }
                let probe = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                if matches!(http.request(probe).await, Ok(reply) if reply.status() == StatusCode::OK) {
                    return Self { child, port, _dir: dir };
                }
                assert!(Instant::now() < deadline, "moto_server did not answer on port {port} within 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("moto_server found no free port in 5 attempts");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// `.tools/moto-venv/bin/moto_server`, installed by `scripts/install-moto` when missing.
async fn moto_server() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = root.join(".tools/moto-venv/bin/moto_server");
    if !binary.exists() {
        let status = Command::new(root.join("scripts/install-moto")).status().await.unwrap();
        assert!(status.success(), "scripts/install-moto failed: {status}");
    }
    binary
}

// ---- an independent SigV4 verifier ---------------------------------------------------------

/// Verifies presigned S3 URLs (AWS Signature Version 4, query-string authentication) as S3
/// does, from AWS's documentation and nothing of object_store: canonical request, string to
/// sign, the HMAC key chain, the expiry.
mod sigv4 {
    use super::*;

    /// Why a presigned request is refused.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Refused {
        Malformed(&'static str),
        MissingHeader(String),
        SignatureMismatch,
        Expired,
    }

    /// What a verified URL was checked with.
    #[derive(Debug)]
    pub struct Checked {
        pub canonical_request: String,
        pub signature: String,
        pub signed_headers: String,
        /// The decoded query parameters.
        pub query: BTreeMap<String, String>,
    }

    /// Verifies a `method` request to `url` carrying `headers` at unix time `now`, for the
    /// credentials of this file (`ACCESS_KEY_ID`, `REGION`, service `s3`).
    pub fn verify(method: &str, url: &str, headers: &[(String, String)], now: u64) -> Result<Checked, Refused> {
        let rest =
            url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or(Refused::Malformed("scheme"))?;
        let (authority, path_and_query) = rest.split_at(rest.find('/').ok_or(Refused::Malformed("path"))?);
        let (path, raw_query) = path_and_query.split_once('?').ok_or(Refused::Malformed("query"))?;

        let mut query = BTreeMap::new();
        for pair in raw_query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or(Refused::Malformed("query encoding"))?;
            let value = decode(value).ok_or(Refused::Malformed("query encoding"))?;
            if query.insert(name, value).is_some() {
                return Err(Refused::Malformed("repeated query parameter"));
            }
        }
        let param =
            |name: &str| query.get(name).map(String::as_str).ok_or(Refused::Malformed("missing X-Amz parameter"));
        if param("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err(Refused::Malformed("algorithm"));
        }
        let date = param("X-Amz-Date")?;
        let signed_at = parse_amz_date(date).ok_or(Refused::Malformed("X-Amz-Date"))?;
        let scope = format!("{}/{REGION}/s3/aws4_request", &date[..8]);
        if param("X-Amz-Credential")? != format!("{ACCESS_KEY_ID}/{scope}") {
            return Err(Refused::Malformed("credential scope"));
        }
        let expires: u64 = param("X-Amz-Expires")?.parse().map_err(|_| Refused::Malformed("X-Amz-Expires"))?;
        if expires > 604_800 {
            return Err(Refused::Malformed("X-Amz-Expires over 7 days"));
        }
        let signed_headers = param("X-Amz-SignedHeaders")?.to_owned();
        let given_signature = param("X-Amz-Signature")?.to_owned();

        // canonical query: every parameter but the signature, names and values encoded as
        // RFC 3986 unreserved-or-%XX, sorted
        let canonical_query = query
            .iter()
            .filter(|(name, _)| *name != "X-Amz-Signature")
            .map(|(name, value)| (encode(name, true), encode(value, true)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&");
        // canonical headers: those listed in X-Amz-SignedHeaders, from the request (host from
        // the URL), lowercase names, trimmed values with inner runs of spaces collapsed
        let mut canonical_headers = String::new();
        for name in signed_headers.split(';') {
            let value = if name == "host" {
                authority.to_owned()
            } else {
                let mut values = headers.iter().filter(|(given, _)| given.eq_ignore_ascii_case(name));
                let (_, value) = values.next().ok_or_else(|| Refused::MissingHeader(name.to_owned()))?;
                value.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            canonical_headers.push_str(&format!("{name}:{value}\n"));
        }
        let canonical_uri = encode(&decode(path).ok_or(Refused::Malformed("path encoding"))?, false);
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD"
        );
        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
        let mut key = format!("AWS4{SECRET_ACCESS_KEY}").into_bytes();
        for part in [&date[..8], REGION, "s3", "aws4_request", &string_to_sign] {
            key = hmac(&key, part);
        }
        let signature = hex::encode(key);
        if signature != given_signature {
            return Err(Refused::SignatureMismatch);
        }
        if now > signed_at + expires {
            return Err(Refused::Expired);
        }
        Ok(Checked { canonical_request, signature, signed_headers, query })
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// AWS's URI encoding: unreserved characters as they are, `/` kept in paths, every other
    /// byte `%XX` (uppercase).
    fn encode(text: &str, encode_slash: bool) -> String {
        let mut encoded = String::new();
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || (byte == b'/' && !encode_slash) {
                encoded.push(char::from(byte));
            } else {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        encoded
    }

    /// RFC 3986 percent-decoding; `+` is a plus sign, not a space.
    fn decode(text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = text.get(i + 1..i + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(decoded).ok()
    }

    /// `YYYYMMDDTHHMMSSZ` as unix seconds.
    fn parse_amz_date(date: &str) -> Option<u64> {
        if date.len() != 16 || &date[8..9] != "T" || !date.ends_with('Z') {
            return None;
        }
        let number = |range: std::ops::Range<usize>| date.get(range)?.parse::<i64>().ok();
        let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
        let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
        // days from civil (Howard Hinnant's algorithm)
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
    }
}
