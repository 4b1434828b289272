//! A small, synchronous `multipart/form-data` reader for decoders whose agents send several
//! parts (pprof `profile` + `sample_type_config`, JFR `jfr` + `labels`).

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// The `filename` of its `Content-Disposition`, if any.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// Why a multipart body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("multipart Content-Type has no boundary")]
    NoBoundary,
    #[error("multipart body has no part delimited by the boundary {0:?}")]
    NoParts(String),
    #[error("multipart part {0} has no blank line after its headers")]
    BadHeaders(usize),
    #[error("multipart body is not terminated by its closing boundary")]
    Unterminated,
}

/// The boundary of a `multipart/form-data; boundary=…` content type, or `None` if the content
/// type is not multipart.
pub fn boundary(content_type: &str) -> Option<Result<String, MultipartError>> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.starts_with("multipart/") {
        return None;
    }
    let found = content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    Some(
        found
            .filter(|b| !b.is_empty())
            .ok_or(MultipartError::NoBoundary),
    )
}

/// Where `needle` first occurs in `haystack` at or after `from`. A JFR part is hundreds of
/// kilobytes: a vectorized search, not a comparison at every offset.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|p| p + from)
}

/// Splits `body` into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut pos =
        find(body, delimiter, 0).ok_or_else(|| MultipartError::NoParts(boundary.into()))?;
    let mut parts = Vec::new();
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        // Skip the line break after the delimiter.
        let header_start = find(body, b"\n", pos).ok_or(MultipartError::Unterminated)? + 1;
        // Headers end at the first blank line, CRLF or bare LF (only the headers are searched
        // for the latter, not the part's data).
        let crlf = find(body, b"\r\n\r\n", header_start);
        let headers = &body[..crlf.unwrap_or(body.len())];
        let (header_end, data_start) = match crlf {
            Some(i) if find(headers, b"\n\n", header_start).is_none() => (i, i + 4),
            _ => {
                let i = find(body, b"\n\n", header_start)
                    .ok_or(MultipartError::BadHeaders(parts.len()))?;
                (i, i + 2)
            }
        };
        // A part ends at the line break preceding the next delimiter.
        let mut next_delim = Vec::with_capacity(delimiter.len() + 1);
        next_delim.push(b'\n');
        next_delim.extend_from_slice(delimiter);
        let next = find(body, &next_delim, data_start.saturating_sub(1))
            .ok_or(MultipartError::Unterminated)?;
        let mut data_end = next;
        if data_end > data_start && body[data_end - 1] == b'\r' {
            data_end -= 1;
        }
        let headers = String::from_utf8_lossy(&body[header_start..header_end]);
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: &body[data_start.min(data_end)..data_end],
        };
        for line in headers.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                for attr in v.split(';').skip(1) {
                    if let Some((ak, av)) = attr.split_once('=') {
                        let av = av.trim().trim_matches('"').to_string();
                        match ak.trim() {
                            "name" => part.name = av,
                            "filename" => part.filename = Some(av),
                            _ => {}
                        }
                    }
                }
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(v.trim().to_string());
            }
        }
        parts.push(part);
        pos = next + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parts_with_crlf_and_binary_data() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\r\n\x00data\r\n--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ--\r\n";
        let b = boundary("multipart/form-data; boundary=XyZ")
            .unwrap()
            .unwrap();
        let parts = parse(body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "profile");
        assert_eq!(parts[0].filename.as_deref(), Some("profile.pprof"));
        assert_eq!(parts[0].data, b"\x1f\x8b\r\n\x00data");
        assert_eq!(parts[1].name, "sample_type_config");
        assert_eq!(parts[1].data, b"{}");
    }

    #[test]
    fn refuses_broken_bodies() {
        assert!(boundary("application/json").is_none());
        assert_eq!(
            boundary("multipart/form-data"),
            Some(Err(MultipartError::NoBoundary))
        );
        assert!(matches!(
            parse(b"nothing", "b"),
            Err(MultipartError::NoParts(_))
        ));
        assert_eq!(
            parse(
                b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc",
                "b"
            ),
            Err(MultipartError::Unterminated)
        );
    }
}
