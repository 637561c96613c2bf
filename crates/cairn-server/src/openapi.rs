//! The OpenAPI 3.1 document served at `/api/openapi.json`, generated from the code.
//!
//! Each handler's `#[utoipa::path]` names its method, path, parameters (read by the handler
//! into the same types, [`super::routes::Q`]), body ([`super::routes::Typed`]) and answers;
//! the router is built from those annotations (utoipa-axum), so no route is served without
//! being in the document. [`finish`] adds what every operation shares: the bearer token on
//! every route but the public ones, and the problem every error is (RFC 9457) as the
//! `default` answer.

use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

/// The routes anyone may call, without a token.
pub const PUBLIC: [&str; 4] = ["/health", "/ready", "/metrics", "/api/auth/login"];

/// An error answer (`application/problem+json`, RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDoc {
    /// `urn:cairn:problem:<kind>`, the stable name of what went wrong.
    r#type: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status, again.
    status: u16,
    /// What was wrong, and where.
    detail: String,
    /// The path the request was for.
    instance: String,
    /// The request's id, as in `X-Request-Id` and the server's log.
    request_id: Option<String>,
    /// For a filter that does not parse: the character where it went wrong (from 0).
    position: Option<u64>,
}

/// A record as the API sends it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Record)]
pub(crate) struct RecordDoc {
    collection: String,
    id: String,
    /// 1 when created, one more after every change; also the `ETag`.
    version: u64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Set for a soft-deleted record.
    #[schema(format = DateTime)]
    deleted_at: Option<String>,
    /// The fields, as the collection's schema types them.
    #[schema(value_type = Object)]
    body: serde_json::Value,
    /// SHA-256 (hex) of the canonical body.
    sha256: String,
    /// The change-log entry that wrote this version.
    seq: u64,
    /// Encrypted fields whose key is locked (they are not in `body`).
    sealed: Option<Vec<String>>,
}

/// A list of items (records, changes, users… as the route says).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Items)]
pub(crate) struct ItemsDoc {
    #[schema(value_type = Vec<Object>)]
    items: Vec<serde_json::Value>,
}

/// Any JSON object.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AnyObject, value_type = Object)]
pub(crate) struct AnyObject(serde_json::Value);

/// The operations of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// The document as served: title and version, the bearer scheme on every route but the
/// public ones, and the problem as every operation's `default` answer.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "cairn".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "The REST API of `cairn serve`: records held to collection rules, history and undo, attachments, \
         backups, exports, users and tokens. Every error is application/problem+json."
            .into(),
    );
    doc.info.license = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("a session token (POST /api/auth/login) or an API key"))
                .build(),
        ),
    );
    let problem = ProblemDoc::schema();
    components.schemas.insert("Problem".into(), problem);
    let default = ResponseBuilder::new()
        .description("a problem (RFC 9457): the status and `type` say what went wrong")
        .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        for operation in operations(item) {
            operation.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(default.clone()));
            if !public {
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            }
        }
    }
    doc
}
