//! Attachments: uploads streamed into the blob store, downloads streamed out of it.
//!
//! `POST …/records/{id}/attachments/{field}` takes the file as the raw body (its name in
//! `?name=`, its type in `Content-Type`) or as `multipart/form-data` with one file part
//! (its file name — unless `?name=` gives one — and type from the part; parts after it are
//! not read). The content goes to the store as it arrives, in
//! constant memory; the store's `blobs.max_bytes` limits it (413) and its type must agree
//! with its first bytes. The record must be one the caller may change; the answer is 201
//! with the record and the attachment.
//!
//! `GET …/records/{id}/attachments/{field}/{hash}` sends one attachment of a record the
//! caller may view: `ETag` is the content hash, `Range` (one byte range) answers 206, a range
//! that cannot be met 416, `If-None-Match` 304; `Content-Disposition` names the file
//! (sanitized when it was stored) and is `inline` only for images, audio and video. A whole
//! download is checked against the hash as it is sent: content that fails the check ends the
//! response short, with an error, instead of completing it.

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn::Upload;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{etag, AppState, Caller, Q};
use crate::openapi::AnyObject;
use crate::problem::Problem;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(download))
        // An upload has its own limit, the store's `blobs.max_bytes`, checked as it streams.
        .merge(OpenApiRouter::new().routes(routes!(upload)).layer(axum::extract::DefaultBodyLimit::disable()))
}

/// An attachment field of a record, in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct FieldPath {
    /// The collection's name.
    collection: String,
    /// The record's id.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    id: String,
    /// An `attachment` or `attachments` field of the collection.
    field: String,
}

/// One attachment of a record, in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AttachmentPath {
    /// The collection's name.
    collection: String,
    /// The record's id.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    id: String,
    /// The field that links to it.
    field: String,
    /// Its content hash (SHA-256, hex).
    #[param(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// A multipart upload: one file part.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // read part by part as a stream, not deserialized
struct MultipartDoc {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The name of a raw upload.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadParams {
    /// The file's name (a raw upload needs one; a multipart part may carry its own).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")]
    name: Option<String>,
}

/// Uploads a file into an attachment field of a record the caller may change.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/attachments/{field}", tag = "attachments",
    operation_id = "upload_attachment",
    params(FieldPath, UploadParams),
    request_body(description = "the file: raw (name in `?name=`, type in Content-Type), or multipart/form-data with one file part",
        content(("application/octet-stream"), (MultipartDoc = "multipart/form-data"))),
    responses((status = 201, description = "stored and linked: the record and the attachment", body = AnyObject,
        headers(("etag" = String, description = "the record's new version")))))]
async fn upload(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(FieldPath { collection, id, field }): Path<FieldPath>,
    Q(query): Q<UploadParams>,
    request: Request,
) -> Result<Response, Problem> {
    let declared = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (tx, reader) = crate::stream::upload();
    let attach = |upload: Upload| state.backend.attach(caller, collection, id, field, upload, Box::new(reader));
    let (record, attachment) = if declared.as_deref().is_some_and(|d| d.starts_with("multipart/form-data")) {
        let unreadable = |e: axum::extract::multipart::MultipartError| {
            Problem::invalid(format!("the multipart body cannot be read: {}", e.body_text()))
        };
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| Problem::invalid(format!("the multipart body cannot be read: {}", e.body_text())))?;
        let part = form
            .next_field()
            .await
            .map_err(unreadable)?
            .ok_or_else(|| Problem::invalid("the multipart body has no part: send the file as one part"))?;
        // `?name=` names it if given; else the part's file name.
        let name = query
            .name
            .or_else(|| part.file_name().map(str::to_string))
            .ok_or_else(|| Problem::invalid("name the file: a filename in its part, or ?name="))?;
        let upload = Upload { name, mime: part.content_type().map(str::to_string) };
        tokio::join!(attach(upload), pump_part(part, tx)).0?
    } else {
        let name = query
            .name
            .ok_or_else(|| Problem::invalid("name the file with ?name=, or send it as multipart/form-data"))?;
        let upload = Upload { name, mime: declared.filter(|d| !d.starts_with("application/octet-stream")) };
        tokio::join!(attach(upload), crate::stream::pump(request.into_body(), tx)).0?
    };
    let mut response = (StatusCode::CREATED, Json(json!({"record": record, "attachment": attachment}))).into_response();
    response.headers_mut().insert(header::ETAG, etag(record.version));
    Ok(response)
}

/// Sends one multipart part into the store's reader (a later part is not read).
async fn pump_part(
    mut part: axum::extract::multipart::Field<'_>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
) {
    loop {
        let chunk = match part.chunk().await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) => Err(std::io::Error::other(format!("the upload was cut off: {e}"))),
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// Downloads an attachment of a record the caller may view.
#[utoipa::path(get, path = "/api/collections/{collection}/records/{id}/attachments/{field}/{hash}", tag = "attachments",
    operation_id = "download_attachment",
    params(AttachmentPath,
        ("Range" = Option<String>, Header, nullable = false, description = "one byte range: `bytes=0-99`, `bytes=100-`, `bytes=-100`"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "the ETag (content hash) the client has"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "the ETag a range is of")),
    responses(
        (status = 200, description = "the content", content_type = "application/octet-stream",
            headers(("etag" = String, description = "the content hash"), ("content-disposition" = String))),
        (status = 206, description = "the range asked for", content_type = "application/octet-stream",
            headers(("content-range" = String))),
        (status = 304, description = "the client's copy is this content")))]
async fn download(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(AttachmentPath { collection, id, field, hash }): Path<AttachmentPath>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (attachment, reader) = state.backend.open_attachment(caller, collection, id, field, hash).await?;
    let tag = format!("\"{}\"", attachment.hash);
    let size = attachment.size;
    let mut response =
        if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| matches(v, &tag)) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            // If-Range: a range of another version of the content is no range of this one.
            let range_applies =
                headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == tag);
            let range = match headers.get(header::RANGE).filter(|_| range_applies) {
                None => None,
                Some(value) => match value.to_str().ok().map(|v| parse_range(v, size)) {
                    Some(Ok(range)) => range,
                    _ => {
                        let mut refused = Problem::new(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "range_not_satisfiable",
                            format!("Range {value:?} is not one byte range within the {size} bytes of this attachment"),
                        )
                        .into_response();
                        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                            refused.headers_mut().insert(header::CONTENT_RANGE, value);
                        }
                        return Ok(refused);
                    }
                },
            };
            match range {
                Some((start, end)) => {
                    let len = end - start + 1;
                    let mut response =
                        (StatusCode::PARTIAL_CONTENT, crate::stream::download(reader, start, len, false))
                            .into_response();
                    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                        response.headers_mut().insert(header::CONTENT_RANGE, value);
                    }
                    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    response
                }
                None => {
                    let mut response = (StatusCode::OK, crate::stream::download(reader, 0, size, true)).into_response();
                    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                    response
                }
            }
        };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The content never changes under its hash, but who may read it can: ask every time.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Ok(value) = HeaderValue::from_str(&attachment.mime) {
        out.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&disposition(&attachment.name, &attachment.mime)) {
        out.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Whether an `If-None-Match` value names `tag` (or is `*`).
fn matches(value: &str, tag: &str) -> bool {
    value.split(',').map(str::trim).any(|v| v == "*" || v.strip_prefix("W/").unwrap_or(v) == tag)
}

/// One byte range of content of `size` bytes, as (first, last) inclusive: `bytes=a-b`,
/// `bytes=a-`, `bytes=-n`. Several ranges are answered with the whole content (`Ok(None)`,
/// as HTTP allows); anything malformed or outside the content is an error.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.trim().split_once('-').ok_or(())?;
    let number = |text: &str| text.trim().parse::<u64>().map_err(|_| ());
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => return Err(()),
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (false, open) => {
            let start = number(first)?;
            let end = if open { size.saturating_sub(1) } else { number(last)?.min(size.saturating_sub(1)) };
            (start, end)
        }
    };
    if start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `Content-Disposition` for a stored name: `inline` for images (but SVG), audio and video,
/// `attachment` otherwise; an ASCII `filename` with anything else replaced, and the name
/// itself as `filename*` (RFC 8187).
fn disposition(name: &str, mime: &str) -> String {
    let inline = (mime.starts_with("image/") && !mime.contains("svg"))
        || mime.starts_with("audio/")
        || mime.starts_with("video/");
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%') || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}", if inline { "inline" } else { "attachment" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says_and_bad_ones_refused() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))), "a suffix longer than the content is all of it");
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))), "an end past the content is cut");
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None), "several ranges: the whole content");
        for bad in ["bytes=100-", "bytes=9-3", "bytes=-0", "bytes=-", "bytes=a-b", "items=0-1", "bytes=0-x", ""] {
            assert_eq!(parse_range(bad, 100), Err(()), "{bad:?}");
        }
        assert_eq!(parse_range("bytes=0-", 0), Err(()), "an empty attachment has no range");
    }

    #[test]
    fn a_disposition_names_the_file_safely_and_inlines_media_only() {
        assert_eq!(disposition("photo.png", "image/png"), "inline; filename=\"photo.png\"; filename*=UTF-8''photo.png");
        let odd = disposition("résumé \"final\";.pdf", "application/pdf");
        assert!(odd.starts_with("attachment; filename=\"r_sum_ _final__.pdf\"; "), "{odd}");
        assert!(odd.ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B.pdf"), "{odd}");
        assert!(disposition("x.svg", "image/svg+xml").starts_with("attachment"), "SVG can carry script");
        assert!(matches("W/\"abc\", \"def\"", "\"abc\"") && matches("*", "\"x\"") && !matches("\"abd\"", "\"abc\""));
    }
}
