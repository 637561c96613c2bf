//! An export as one stream: a tar archive of the export folder ([`Store::export`]) for a
//! client that cannot be handed a folder — a download from the server. The export is made
//! first, into a scratch folder in the store's directory (so that an export that cannot be
//! made is an error before a byte is sent), then written out; the scratch folder goes when
//! the archive is dropped, or is swept by the next export if the process died.

use std::io::Write;

use crate::engine::layout::EXPORT_TMP_PREFIX;
use crate::engine::store::{Progress, Store};
use crate::error::{Error, Result};
use crate::portability::export::{ExportManifest, ExportOptions};

/// The folder inside the archive that holds the export.
const ROOT: &str = "cairn-export";

/// An export made and waiting to be written out as a tar archive.
#[derive(Debug)]
pub struct ExportArchive {
    scratch: tempfile::TempDir,
    _owner: crate::engine::owner::Owner,
    manifest: ExportManifest,
}

impl ExportArchive {
    /// What the export holds (also `cairn-export/manifest.json` in the archive).
    pub fn manifest(&self) -> &ExportManifest {
        &self.manifest
    }

    /// Writes the archive to `out`: one folder, `cairn-export/`, that `cairn import` reads
    /// once unpacked. The scratch folder is removed afterwards.
    pub fn write_to(self, out: impl Write) -> Result<()> {
        let folder = self.scratch.path().join(ROOT);
        let failed = |e: std::io::Error| Error::io("write the export archive of", &folder, e);
        let mut archive = tar::Builder::new(out);
        archive.follow_symlinks(false);
        archive.append_dir_all(ROOT, &folder).map_err(failed)?;
        archive.into_inner().map_err(failed)?.flush().map_err(failed)
    }
}

impl Store {
    /// Makes an export ([`Store::export`], the same options) to be written out as one tar
    /// archive with [`ExportArchive::write_to`].
    pub fn export_archive(&self, options: &ExportOptions, progress: Progress<'_>) -> Result<ExportArchive> {
        crate::safety::leftovers::sweep_exports(self.dir());
        let scratch = tempfile::Builder::new()
            .prefix(EXPORT_TMP_PREFIX)
            .tempdir_in(self.dir())
            .map_err(|e| Error::io("create a folder in", self.dir(), e))?;
        let owner = crate::engine::owner::claim(scratch.path())?;
        let manifest = self.export(&scratch.path().join(ROOT), options, progress)?;
        Ok(ExportArchive { scratch, _owner: owner, manifest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_unpacks_to_an_export_that_imports_and_leaves_no_scratch_behind() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path().join("s"), crate::StoreOptions::default()).expect("open");
        let schema = r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#;
        store.create_collection(crate::CollectionSchema::from_json(schema, "s").expect("schema")).expect("notes");
        store.create_with_id("notes", "n1", serde_json::json!({"title": "kept"})).expect("n1");
        let archive = store.export_archive(&ExportOptions::default(), &mut |_, _, _| {}).expect("export");
        assert_eq!(archive.manifest().collections.len(), 1);
        let mut bytes = Vec::new();
        archive.write_to(&mut bytes).expect("write");
        let leftover = std::fs::read_dir(store.dir())
            .expect("dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(EXPORT_TMP_PREFIX));
        assert!(!leftover, "the scratch folder is gone");

        let unpacked = tmp.path().join("unpacked");
        tar::Archive::new(&bytes[..]).unpack(&unpacked).expect("unpack");
        assert!(!unpacked.join(ROOT).join(crate::engine::layout::OWNER_FILE).exists());
        let other = Store::open(tmp.path().join("t"), crate::StoreOptions::default()).expect("other");
        other
            .import(&unpacked.join(ROOT), &crate::ImportOptions::default(), &mut |_, _, _| {})
            .expect("the archive's export imports");
        assert_eq!(other.get("notes", "n1").expect("n1").body["title"], "kept");
    }
}
