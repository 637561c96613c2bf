//! Attachments over HTTP: raw and multipart uploads streamed into the blob store, downloads
//! with the content hash as ETag, ranges, conditional requests and a sanitized
//! Content-Disposition; each refusal a precise problem; content damaged on disk never
//! completes a download.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::{json, Value};

use crate::{app, call, call_raw};

/// A PNG's signature and a little more: the store checks a declared type against it.
fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..5_000u32).map(|i| (i % 256) as u8));
    bytes
}

fn files_schema() -> String {
    json!({"name": "files", "fields": [
        {"name": "title", "type": "text"},
        {"name": "cover", "type": "attachment"},
        {"name": "photos", "type": "attachments"}]})
    .to_string()
}

fn multipart(boundary: &str, name: &str, mime: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn uploads_are_stored_linked_and_sent_back_with_ranges_and_validators() {
    // Uploads are held to the store's blob limit, not to the (here tiny) JSON body limit.
    let (_tmp, store, api) = app(ServerConfig { max_body_bytes: 1_000, ..ServerConfig::default() });
    assert_eq!(call(&api, Method::POST, "/api/collections", Some(&files_schema()), &[]).await.status, 201);
    call(&api, Method::POST, "/api/collections/files/records?id=f1", Some(r#"{"title": "one"}"#), &[]).await;
    let base = "/api/collections/files/records/f1/attachments";
    let content = png();

    // Raw: the name in the query, the type in Content-Type.
    let (status, headers, body) = call_raw(
        &api,
        Method::POST,
        &format!("{base}/cover?name=cover.png"),
        content.clone(),
        &[("content-type", "image/png")],
    )
    .await;
    let answer: Value = serde_json::from_slice(&body.expect("body")).expect("json");
    assert_eq!(status, 201, "{answer}");
    let hash = answer["attachment"]["hash"].as_str().expect("hash").to_string();
    assert_eq!(answer["record"]["body"]["cover"]["hash"], json!(hash));
    assert_eq!(answer["attachment"]["size"], content.len());
    assert_eq!(headers["etag"], "\"2\"", "the record's new version");
    assert_eq!(store.blob(&hash).expect("stored").refs, 1);

    // Multipart: name and type from the part; an attachments field grows.
    for name in ["a.png", "b.png"] {
        let body = multipart("XyZ", name, "image/png", &content);
        let (status, _, _) = call_raw(
            &api,
            Method::POST,
            &format!("{base}/photos"),
            body,
            &[("content-type", "multipart/form-data; boundary=XyZ")],
        )
        .await;
        assert_eq!(status, 201);
    }
    let photos = store.get("files", "f1").expect("f1").body["photos"].clone();
    assert_eq!(
        photos.as_array().map(|p| p.iter().map(|p| p["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("a.png"), json!("b.png")])
    );

    // Whole, ranged, conditional.
    let url = format!("{base}/cover/{hash}");
    let (status, headers, body) = call_raw(&api, Method::GET, &url, Vec::new(), &[]).await;
    assert_eq!((status.as_u16(), body.expect("body")), (200, content.clone()));
    assert_eq!(headers["etag"], format!("\"{hash}\""));
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-disposition"], "inline; filename=\"cover.png\"; filename*=UTF-8''cover.png");
    assert_eq!(headers["accept-ranges"], "bytes");
    let (status, headers, body) = call_raw(&api, Method::GET, &url, Vec::new(), &[("range", "bytes=10-19")]).await;
    assert_eq!((status.as_u16(), body.expect("body")), (206, content[10..20].to_vec()));
    assert_eq!(headers["content-range"], format!("bytes 10-19/{}", content.len()));
    let (_, _, tail) = call_raw(&api, Method::GET, &url, Vec::new(), &[("range", "bytes=-7")]).await;
    assert_eq!(tail.expect("tail"), content[content.len() - 7..].to_vec());
    let (status, _, _) =
        call_raw(&api, Method::GET, &url, Vec::new(), &[("if-none-match", &format!("\"{hash}\""))]).await;
    assert_eq!(status, 304);
    let stale = [("range", "bytes=0-0"), ("if-range", "\"another\"")];
    let (status, _, body) = call_raw(&api, Method::GET, &url, Vec::new(), &stale).await;
    assert_eq!(
        (status.as_u16(), body.expect("body").len()),
        (200, content.len()),
        "If-Range of other content: all of it"
    );
    let refused = call(&api, Method::GET, &url, None, &[("range", "bytes=99999-")]).await;
    refused.problem(416, "range_not_satisfiable");
    assert_eq!(refused.headers["content-range"], format!("bytes */{}", content.len()));
    call(&api, Method::GET, &url, None, &[("range", "bytes=x-y")]).await.problem(416, "range_not_satisfiable");
}

#[tokio::test]
async fn each_bad_upload_or_download_is_a_precise_problem_that_stores_nothing() {
    let (_tmp, store, api) = app(ServerConfig::default());
    assert_eq!(call(&api, Method::POST, "/api/collections", Some(&files_schema()), &[]).await.status, 201);
    call(&api, Method::POST, "/api/collections/files/records?id=f1", Some(r#"{"title": "one"}"#), &[]).await;
    let base = "/api/collections/files/records";
    let post = |uri: String, content: Vec<u8>, mime: &'static str| {
        let api = api.clone();
        async move {
            let (status, headers, body) = call_raw(&api, Method::POST, &uri, content, &[("content-type", mime)]).await;
            let body: Value = serde_json::from_slice(&body.expect("body")).unwrap_or(Value::Null);
            crate::Answer { status, headers, body }
        }
    };
    let png = png();
    post(format!("{base}/f1/attachments/cover"), png.clone(), "image/png").await.problem(400, "invalid_input");
    post(format!("{base}/f1/attachments/title?name=a.png"), png.clone(), "image/png")
        .await
        .problem(400, "invalid_input");
    post(format!("{base}/f1/attachments/nope?name=a.png"), png.clone(), "image/png")
        .await
        .problem(400, "invalid_input");
    post(format!("{base}/zz/attachments/cover?name=a.png"), png.clone(), "image/png").await.problem(404, "not_found");
    post(format!("{base}/f1/attachments/cover?name=../../etc/passwd"), png.clone(), "image/png")
        .await
        .problem(400, "invalid_input");
    post(format!("{base}/f1/attachments/cover?name=a.png"), b"plain text, not an image".to_vec(), "image/png")
        .await
        .problem(400, "invalid_input");
    post(format!("{base}/f1/attachments/cover"), b"--b\r\n\r\n".to_vec(), "multipart/form-data; boundary=b")
        .await
        .problem(400, "invalid_input");
    store.set_setting("blobs.max_bytes", json!(1_000)).expect("limit");
    post(format!("{base}/f1/attachments/cover?name=a.png"), png.clone(), "image/png").await.problem(413, "too_large");
    assert!(store.blobs(None, 10).expect("blobs").is_empty(), "nothing was stored");
    assert_eq!(store.get("files", "f1").expect("f1").version, 1, "nor linked");

    // Downloads reach only what the record links to, in that field.
    store.set_setting("blobs.max_bytes", json!(10_000_000)).expect("limit");
    let (status, _, body) =
        call_raw(&api, Method::POST, &format!("{base}/f1/attachments/cover?name=c.png"), png.clone(), &[]).await;
    assert_eq!(status, 201);
    let hash = serde_json::from_slice::<Value>(&body.expect("body")).expect("json")["attachment"]["hash"]
        .as_str()
        .expect("hash")
        .to_string();
    let other = store.put_blob(&b"an unlinked blob"[..]).expect("blob").hash;
    for uri in [
        format!("{base}/f1/attachments/cover/{other}"),
        format!("{base}/f1/attachments/photos/{hash}"),
        format!("{base}/f1/attachments/cover/not-a-hash"),
        format!("{base}/zz/attachments/cover/{hash}"),
    ] {
        call(&api, Method::GET, &uri, None, &[]).await.problem(404, "not_found");
    }

    // Content damaged on disk: the download ends short with an error, never complete.
    let blob_file =
        walk(&store.dir().join("blobs")).into_iter().find(|p| p.to_string_lossy().contains(&hash)).expect("file");
    let mut bytes = std::fs::read(&blob_file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob_file, bytes).expect("damage");
    let (status, _, body) =
        call_raw(&api, Method::GET, &format!("{base}/f1/attachments/cover/{hash}"), Vec::new(), &[]).await;
    assert_eq!(status, 200, "the headers went out before the end was read");
    assert!(body.is_err(), "the body fails instead of completing: {body:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
