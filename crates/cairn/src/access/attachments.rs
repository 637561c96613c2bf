//! Attachments for a signed-in caller: uploading into a record they may change, and reading
//! one a record they may view links to. A blob is reached only through a record: knowing a
//! content hash opens nothing the caller's records do not link to.

use std::io::Read;

use crate::access::tokens::Principal;
use crate::blobs::{Attachment, BlobReader, Linking, Upload};
use crate::engine::hash::ContentHash;
use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::Record;

impl Store {
    /// [`Store::attach`] as `principal`: the record must be visible to them (else "not found",
    /// before any of the upload is read) and the change allowed as any update is (the update
    /// rule or a write grant).
    pub fn attach_as(
        &self,
        principal: &Principal,
        collection: &str,
        id: &str,
        field: &str,
        input: impl Read,
        upload: &Upload,
    ) -> Result<(Record, Attachment)> {
        let (caller, owned_collection, owned_id) = (principal.clone(), collection.to_string(), id.to_string());
        self.attach_with(
            collection,
            id,
            field,
            input,
            upload,
            Linking {
                check: &|store| store.get_as(principal, collection, id).map(drop),
                link: Box::new(move |tx, change| tx.update_as(&caller, &owned_collection, &owned_id, change)),
            },
        )
    }

    /// The attachment with content `hash` that field `field` of record `id`, visible to
    /// `principal`, links to, and a stream of its content (verified against the hash as it is
    /// read to the end). Any other hash or field — or a record they cannot see — answers
    /// "not found".
    pub fn open_attachment_as(
        &self,
        principal: &Principal,
        collection: &str,
        id: &str,
        field: &str,
        hash: &str,
    ) -> Result<(Attachment, BlobReader)> {
        let record = self.get_as(principal, collection, id)?;
        let schema = crate::data::collection::load(&*self.reader()?, collection)?.schema;
        let not_linked = || Error::BlobNotFound { hash: hash.to_string() };
        let wanted = ContentHash::parse(hash).map_err(|_| not_linked())?;
        let attachment = linked(&schema, &record, field, &wanted).ok_or_else(not_linked)?;
        let reader = self.open_blob(wanted.as_str())?;
        Ok((attachment, reader))
    }
}

/// The attachment in `field` of `record` whose content is `hash`, if it links to one.
fn linked(schema: &crate::CollectionSchema, record: &Record, field: &str, hash: &ContentHash) -> Option<Attachment> {
    let (_, item) = crate::data::attachments::items(schema, &record.body)
        .into_iter()
        .find(|(name, item)| *name == field && item.get("hash").and_then(|h| h.as_str()) == Some(hash.as_str()))?;
    let text = |key: &str, default: &str| item.get(key).and_then(|v| v.as_str()).unwrap_or(default).to_string();
    Some(Attachment {
        hash: hash.clone(),
        name: text("name", "attachment"),
        mime: text("mime", "application/octet-stream"),
        size: item.get("size").and_then(|v| v.as_u64()).unwrap_or(0),
    })
}
