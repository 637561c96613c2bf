//! What an attachment is: its content type, recognised by its first bytes and checked
//! against what the uploader declares, and its file name, cleaned or refused.

use super::*;

/// How much of the input is read ahead to recognise its type and judge its compressibility.
pub(crate) const SNIFF_BYTES: usize = 1 << 20;

/// Content types recognised by their first bytes, and whether they are already compressed.
pub(crate) const MAGIC: &[(&str, &[u8], usize, bool)] = &[
    // (mime, magic, offset, compressed)
    ("image/jpeg", b"\xFF\xD8\xFF", 0, true),
    ("image/png", b"\x89PNG\r\n\x1A\n", 0, true),
    ("image/gif", b"GIF8", 0, true),
    ("image/webp", b"WEBP", 8, true),
    ("audio/wav", b"WAVE", 8, false),
    ("application/pdf", b"%PDF-", 0, false),
    ("audio/mpeg", b"ID3", 0, true),
    ("audio/ogg", b"OggS", 0, true),
    ("audio/flac", b"fLaC", 0, true),
    ("video/webm", b"\x1A\x45\xDF\xA3", 0, true),
    ("application/zip", b"PK\x03\x04", 0, true),
    ("application/gzip", b"\x1F\x8B", 0, true),
    ("application/zstd", b"\x28\xB5\x2F\xFD", 0, true),
    ("application/x-7z-compressed", b"7z\xBC\xAF\x27\x1C", 0, true),
    ("application/vnd.rar", b"Rar!\x1A\x07", 0, true),
    ("application/x-bzip2", b"BZh", 0, true),
    ("application/x-xz", b"\xFD7zXZ\x00", 0, true),
];

/// The type the content's first bytes show, and whether that type is already compressed.
pub(crate) fn sniff(head: &[u8]) -> Option<(&'static str, bool)> {
    // ISO base media (MP4, MOV, M4A, HEIC): a box of type `ftyp` at offset 4.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some(match &head[8..12] {
            b"heic" | b"heix" | b"mif1" => ("image/heic", true),
            b"M4A " => ("audio/mp4", true),
            b"qt  " => ("video/quicktime", true),
            _ => ("video/mp4", true),
        });
    }
    // MPEG audio frames without an ID3 tag.
    if head.len() >= 2 && head[0] == 0xFF && matches!(head[1], 0xFB | 0xF3 | 0xF2) {
        return Some(("audio/mpeg", true));
    }
    MAGIC
        .iter()
        .find(|(_, magic, at, _)| head.get(*at..at + magic.len()) == Some(*magic))
        .map(|(mime, _, _, compressed)| (*mime, *compressed))
}

/// Types that are the same container under another name.
pub(crate) fn same_family(declared: &str, sniffed: &str) -> bool {
    let family = |m: &str| -> String {
        match m {
            "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
            "audio/mp3" => "audio/mpeg".into(),
            "audio/x-wav" | "audio/wave" => "audio/wav".into(),
            "video/mp4" | "audio/mp4" | "video/quicktime" | "audio/x-m4a" | "image/heic" => "mp4".into(),
            "audio/ogg" | "video/ogg" | "application/ogg" => "ogg".into(),
            "video/webm" | "audio/webm" | "video/x-matroska" => "webm".into(),
            "application/x-zip-compressed" => "application/zip".into(),
            m if m.ends_with("+zip")
                || m.starts_with("application/vnd.openxmlformats-officedocument.")
                || m.starts_with("application/vnd.oasis.opendocument.") =>
            {
                "application/zip".into()
            }
            "application/x-gzip" => "application/gzip".into(),
            m => m.to_string(),
        }
    };
    family(declared) == family(sniffed)
}

/// The MIME type a file name's extension suggests.
pub fn mime_for_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        "7z" => "application/x-7z-compressed",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        _ => return None,
    })
}

/// The MIME type to record for an upload, or why the declared one is refused.
pub(crate) fn checked_mime(declared: Option<&str>, name: &str, sniffed: Option<&str>) -> Result<String> {
    let refuse = |reason: String| Err(Error::InvalidUpload { name: name.to_string(), reason });
    let Some(declared) = declared else {
        return Ok(sniffed.or_else(|| mime_for_name(name)).unwrap_or("application/octet-stream").to_string());
    };
    let declared = declared.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    match declared.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {}
        _ => return refuse(format!("{declared:?} is not a MIME type (type/subtype)")),
    }
    if declared == "application/octet-stream" {
        return Ok(declared);
    }
    match sniffed {
        Some(found) if !same_family(&declared, found) => {
            refuse(format!("declared as {declared} but the content is {found}"))
        }
        None if MAGIC.iter().any(|(m, ..)| same_family(&declared, m))
            || declared.starts_with("video/")
            || declared.starts_with("image/") =>
        {
            refuse(format!("declared as {declared} but the content does not start like one"))
        }
        _ => Ok(declared),
    }
}

/// Windows device names, refused as file names everywhere so that exports stay portable.
pub(crate) const RESERVED_NAMES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1", "lpt2",
    "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// A file name cleaned of surrounding spaces and checked: no folders, no traversal, no control
/// characters, not a device name, at most 255 bytes.
pub fn sanitize_name(name: &str) -> Result<String> {
    let refuse = |reason: &str| Err(Error::InvalidUpload { name: name.to_string(), reason: reason.to_string() });
    let clean = name.trim();
    if clean.is_empty() {
        return refuse("a file name is required");
    }
    if clean == "." || clean == ".." || clean.split(['/', '\\']).any(|part| part == "..") {
        return refuse("path traversal (`..`) is not allowed in a file name");
    }
    if clean.contains(['/', '\\']) {
        return refuse("a file name cannot contain folders (`/` or `\\`)");
    }
    if clean.chars().any(|c| c.is_control()) {
        return refuse("a file name cannot contain control characters");
    }
    if clean.len() > 255 {
        return refuse("a file name is at most 255 bytes");
    }
    let stem = clean.split('.').next().unwrap_or_default().trim_end().to_ascii_lowercase();
    if RESERVED_NAMES.contains(&stem.as_str()) {
        return refuse("this is a reserved device name on Windows");
    }
    Ok(clean.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_types_by_their_first_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(("image/jpeg", true)));
        assert_eq!(sniff(b"\x89PNG\r\n\x1A\n...."), Some(("image/png", true)));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0"), Some(("video/mp4", true)));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some(("audio/wav", false)));
        assert_eq!(sniff(b"%PDF-1.7"), Some(("application/pdf", false)));
        assert_eq!(sniff(b"{\"plain\": \"json\"}"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn declared_types_must_agree_with_the_content() {
        let png = Some("image/png");
        assert_eq!(checked_mime(Some("image/png"), "a.png", png).expect("same"), "image/png");
        assert_eq!(checked_mime(Some("IMAGE/PNG; q=1"), "a.png", png).expect("normalised"), "image/png");
        assert_eq!(checked_mime(None, "a.bin", png).expect("from content"), "image/png");
        assert_eq!(checked_mime(None, "notes.txt", None).expect("from name"), "text/plain");
        assert_eq!(
            checked_mime(Some("application/octet-stream"), "a", png).expect("no claim"),
            "application/octet-stream"
        );
        assert_eq!(
            checked_mime(
                Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                "a.xlsx",
                Some("application/zip")
            )
            .expect("zip family"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        );
        assert!(matches!(checked_mime(Some("image/jpeg"), "a.jpg", png), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("image/png"), "a.png", None), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("text/plain"), "a.txt", png), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("not a type"), "a", None), Err(Error::InvalidUpload { .. })));
    }

    #[test]
    fn file_names_are_cleaned_or_refused() {
        assert_eq!(sanitize_name("  report.pdf ").expect("trimmed"), "report.pdf");
        assert_eq!(sanitize_name("Résumé (final).docx").expect("unicode"), "Résumé (final).docx");
        for bad in ["", "  ", "..", "../etc/passwd", "a/b.txt", "a\\b.txt", "x\u{0}y", "tab\there", "CON", "nul.txt"] {
            assert!(matches!(sanitize_name(bad), Err(Error::InvalidUpload { .. })), "{bad:?} accepted");
        }
        assert!(sanitize_name(&"a".repeat(256)).is_err());
        assert!(sanitize_name(&"a".repeat(255)).is_ok());
    }
}
