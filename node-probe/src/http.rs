//! HTTP/1.x request and status lines from payload snippets.
//!
//! The snippet is the start of a TCP payload and may end mid-line. Anything
//! that does not begin like an HTTP/1.x request or response (TLS, HTTP/2,
//! other protocols) gives `None`: on a TCP stream that is not an error, just
//! not HTTP. Paths and reasons are kept as sent (lossy UTF-8); the display
//! sanitizes them.

use std::borrow::Cow;

/// The request methods we recognise (RFC 9110 and PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Connect,
    Trace,
}

const METHODS: [Method; 9] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Patch,
    Method::Options,
    Method::Connect,
    Method::Trace,
];

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Connect => "CONNECT",
            Self::Trace => "TRACE",
        }
    }
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    Http10,
    Http11,
}

const VERSIONS: [HttpVersion; 2] = [HttpVersion::Http10, HttpVersion::Http11];

impl HttpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

/// The first line of an HTTP/1.x message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpLine {
    Request {
        method: Method,
        /// The request target as sent; cut short when `path_complete` is false.
        path: String,
        path_complete: bool,
        /// None when the snippet ends before the whole version.
        version: Option<HttpVersion>,
    },
    Response {
        version: HttpVersion,
        code: u16,
        /// Possibly empty, or cut short by the snippet.
        reason: String,
    },
}

/// The request or status line at the start of `snippet`, if it is one.
pub fn parse_http(snippet: &[u8]) -> Option<HttpLine> {
    if snippet.starts_with(b"HTTP/") {
        parse_status_line(snippet)
    } else {
        parse_request_line(snippet)
    }
}

fn parse_request_line(snippet: &[u8]) -> Option<HttpLine> {
    let (method, rest) = METHODS.iter().find_map(|method| {
        let rest = snippet.strip_prefix(method.as_str().as_bytes())?;
        Some((*method, rest.strip_prefix(b" ")?))
    })?;
    let (path, after_path) = split_at_delimiter(rest);
    let Some((&delimiter, version_and_rest)) = after_path.split_first() else {
        return Some(HttpLine::Request {
            method,
            path: text(path),
            path_complete: false,
            version: None,
        });
    };
    // A line ending right after the path would be HTTP/0.9, which nothing
    // speaks any more; an empty path is not a request.
    if delimiter != b' ' || path.is_empty() {
        return None;
    }
    let (version, after_version) = split_at_delimiter(version_and_rest);
    let version = if after_version.is_empty() {
        // Cut inside the version: it must still be on its way to one.
        match VERSIONS.iter().find(|v| v.as_str().as_bytes() == version) {
            Some(v) => Some(*v),
            None if VERSIONS
                .iter()
                .any(|v| v.as_str().as_bytes().starts_with(version)) =>
            {
                None
            }
            None => return None,
        }
    } else {
        if !matches!(after_version[0], b'\r' | b'\n') {
            return None;
        }
        Some(*VERSIONS.iter().find(|v| v.as_str().as_bytes() == version)?)
    };
    Some(HttpLine::Request {
        method,
        path: text(path),
        path_complete: true,
        version,
    })
}

fn parse_status_line(snippet: &[u8]) -> Option<HttpLine> {
    let (version, rest) = VERSIONS.iter().find_map(|version| {
        let rest = snippet.strip_prefix(version.as_str().as_bytes())?;
        Some((*version, rest.strip_prefix(b" ")?))
    })?;
    let digits = rest.get(..3)?;
    if !matches!(digits[0], b'1'..=b'5') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    let reason = match rest.get(3) {
        None | Some(b'\r' | b'\n') => String::new(),
        Some(b' ') => text(split_line(&rest[4..])),
        Some(_) => return None,
    };
    Some(HttpLine::Response {
        version,
        code,
        reason,
    })
}

/// Splits at the first space, CR or LF; the second part starts with it.
fn split_at_delimiter(bytes: &[u8]) -> (&[u8], &[u8]) {
    let at = bytes
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    bytes.split_at(at)
}

/// The bytes before the line end (or all of them when the line is cut).
fn split_line(bytes: &[u8]) -> &[u8] {
    let at = bytes
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    &bytes[..at]
}

fn text(bytes: &[u8]) -> String {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_recognised() {
        for method in METHODS {
            let line = format!("{} /x HTTP/1.1\r\n", method.as_str());
            assert_eq!(
                parse_http(line.as_bytes()),
                Some(HttpLine::Request {
                    method,
                    path: "/x".into(),
                    path_complete: true,
                    version: Some(HttpVersion::Http11),
                }),
                "{line}"
            );
        }
    }

    #[test]
    fn lowercase_or_unknown_methods_are_not_http() {
        assert_eq!(parse_http(b"get / HTTP/1.1\r\n"), None);
        assert_eq!(parse_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), None);
        assert_eq!(parse_http(b"GETX / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn status_line_with_and_without_reason() {
        assert_eq!(
            parse_http(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n"),
            Some(HttpLine::Response {
                version: HttpVersion::Http10,
                code: 404,
                reason: "Not Found".into(),
            })
        );
        assert_eq!(
            parse_http(b"HTTP/1.1 204\r\n"),
            Some(HttpLine::Response {
                version: HttpVersion::Http11,
                code: 204,
                reason: String::new(),
            })
        );
    }

    #[test]
    fn paths_are_kept_raw_for_the_display_to_sanitize() {
        let Some(HttpLine::Request { path, .. }) = parse_http(b"GET /a\x1b[2J\xff HTTP/1.1\r\n")
        else {
            panic!("not a request");
        };
        assert_eq!(path, "/a\u{1b}[2J\u{fffd}");
    }

    #[test]
    fn version_cut_mid_way_is_still_a_request() {
        assert_eq!(
            parse_http(b"POST /api/v1/items HTTP/1."),
            Some(HttpLine::Request {
                method: Method::Post,
                path: "/api/v1/items".into(),
                path_complete: true,
                version: None,
            })
        );
        assert_eq!(parse_http(b"POST /api/v1/items HTTX"), None);
    }
}
