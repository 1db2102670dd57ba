//! The `Content-Disposition: attachment` header of a download (RFC 6266), safe for any file
//! name: a quoted ASCII `filename` that every client understands, plus `filename*`
//! (RFC 8187, UTF-8, percent-encoded) when the name is not plain printable ASCII.

/// `attachment; filename="..."[; filename*=UTF-8''...]` for `file_name`.
///
/// The quoted fallback keeps printable ASCII except `"` and `\`, which (like every other
/// byte) become `_`; the exact name then travels in `filename*`. The result is always a
/// valid header value (visible ASCII and spaces only).
pub(crate) fn attachment(file_name: &str) -> String {
    let fallback: String =
        file_name.chars().map(|c| if matches!(c, ' '..='~') && c != '"' && c != '\\' { c } else { '_' }).collect();
    if fallback == file_name {
        return format!("attachment; filename=\"{fallback}\"");
    }
    let mut encoded = String::with_capacity(file_name.len() * 3);
    for byte in file_name.bytes() {
        // attr-char of RFC 8187: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." /
        // "^" / "_" / "`" / "|" / "~"; everything else is percent-encoded
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_ascii_name_is_quoted_as_is() {
        assert_eq!(attachment("report 2024.pdf"), "attachment; filename=\"report 2024.pdf\"");
    }

    #[test]
    fn a_non_ascii_name_gets_an_ascii_fallback_and_filename_star() {
        assert_eq!(
            attachment("résumé.pdf"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
    }

    #[test]
    fn quotes_and_backslashes_cannot_break_out_of_the_quoted_name() {
        assert_eq!(
            attachment("a\"b\\c;d.txt"),
            "attachment; filename=\"a_b_c;d.txt\"; filename*=UTF-8''a%22b%5Cc%3Bd.txt"
        );
    }

    #[test]
    fn the_header_is_always_a_valid_header_value() {
        for name in ["x", "日本語.txt", "tab\there", "'quote'", "100%.txt", "emoji 🎉.png"] {
            let value = attachment(name);
            assert!(http::HeaderValue::from_str(&value).is_ok(), "{value}");
            assert!(value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{value}");
        }
    }
}
