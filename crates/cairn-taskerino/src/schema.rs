//! The predefined Taskerino schema: the collections of the desktop app whose storage plan
//! (seed 004) cairn was founded on. Used by `cairn demo` and by the legacy importer.
//!
//! Field names follow cairn's snake_case rule; the legacy camelCase names map onto them
//! (`startTime` → `started_at`, `audioSegments` → `audio_segments`, `companyId` → `company`…);
//! the arrays of related ids (`topicIds`, `companyIds`, `contactIds`) become indexed tags fields, so
//! that `topic_ids has "t1"` finds them. `attachments` keeps attachment files no record links.

use serde_json::json;

use cairn::CollectionSchema;

/// The Taskerino collections, in an order where every relation target comes first.
pub fn schemas() -> Vec<CollectionSchema> {
    let defs = [
        json!({"name": "companies", "description": "Organisations the user works with", "fields": [
            {"name": "name", "type": "text", "required": true, "summary": true, "indexed": true, "fulltext": true},
            {"name": "website", "type": "text"},
            {"name": "notes", "type": "text", "fulltext": true},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "created_at", "type": "datetime"},
            {"name": "updated_at", "type": "datetime"}]}),
        json!({"name": "contacts", "description": "People, with personal data flagged pii", "fields": [
            {"name": "name", "type": "text", "required": true, "summary": true, "fulltext": true, "pii": true},
            {"name": "email", "type": "text", "unique": true, "pii": true},
            {"name": "phone", "type": "text", "pii": true},
            {"name": "role", "type": "text", "summary": true},
            {"name": "company", "type": "relation", "collection": "companies", "indexed": true},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "created_at", "type": "datetime"},
            {"name": "updated_at", "type": "datetime"}]}),
        json!({"name": "topics", "description": "Projects and areas notes are filed under", "fields": [
            {"name": "name", "type": "text", "required": true, "unique": true, "summary": true},
            {"name": "kind", "type": "text", "default": "project", "summary": true},
            {"name": "description", "type": "text", "fulltext": true},
            {"name": "created_at", "type": "datetime"},
            {"name": "updated_at", "type": "datetime"}]}),
        json!({"name": "sessions", "description": "Recorded work sessions with screenshots and audio", "fields": [
            {"name": "name", "type": "text", "required": true, "summary": true, "fulltext": true},
            {"name": "description", "type": "text", "fulltext": true},
            {"name": "status", "type": "text", "required": true, "default": "active", "indexed": true, "summary": true},
            {"name": "started_at", "type": "datetime", "required": true, "indexed": true, "summary": true},
            {"name": "ended_at", "type": "datetime"},
            {"name": "tags", "type": "tags", "indexed": true, "summary": true},
            {"name": "company", "type": "relation", "collection": "companies", "indexed": true},
            {"name": "topic_ids", "type": "tags", "indexed": true, "description": "ids of related topics"},
            {"name": "company_ids", "type": "tags", "indexed": true, "description": "ids of related companies"},
            {"name": "contact_ids", "type": "tags", "indexed": true, "description": "ids of related contacts"},
            {"name": "screenshots", "type": "json", "description": "[{timestamp, attachmentId, analysis}]"},
            {"name": "audio_segments", "type": "json", "description": "[{timestamp, duration, transcript, attachmentId}]"},
            {"name": "summary", "type": "json", "description": "AI summary: {narrative, highlights, actionItems}"},
            {"name": "enrichment_status", "type": "json"},
            {"name": "attachments", "type": "attachments"},
            {"name": "created_at", "type": "datetime"},
            {"name": "updated_at", "type": "datetime"}]}),
        json!({"name": "notes", "description": "Captured notes, from sessions or by hand", "fields": [
            {"name": "content", "type": "text", "required": true, "fulltext": true},
            {"name": "summary", "type": "text", "summary": true, "fulltext": true},
            {"name": "timestamp", "type": "datetime", "required": true, "indexed": true, "summary": true},
            {"name": "source", "type": "text", "default": "manual", "indexed": true},
            {"name": "tags", "type": "tags", "indexed": true, "summary": true},
            {"name": "topic", "type": "relation", "collection": "topics", "indexed": true},
            {"name": "session", "type": "relation", "collection": "sessions"},
            {"name": "topic_ids", "type": "tags", "indexed": true, "description": "ids of related topics"},
            {"name": "company_ids", "type": "tags", "indexed": true, "description": "ids of related companies"},
            {"name": "contact_ids", "type": "tags", "indexed": true, "description": "ids of related contacts"},
            {"name": "pinned", "type": "bool", "default": false},
            {"name": "attachments", "type": "attachments"},
            {"name": "created_at", "type": "datetime", "indexed": true},
            {"name": "updated_at", "type": "datetime"}]}),
        json!({"name": "tasks", "description": "To-dos, often extracted from notes", "fields": [
            {"name": "title", "type": "text", "required": true, "summary": true, "fulltext": true},
            {"name": "description", "type": "text", "fulltext": true},
            {"name": "status", "type": "text", "default": "todo", "indexed": true, "summary": true},
            {"name": "priority", "type": "text", "default": "medium", "indexed": true, "summary": true},
            {"name": "due_date", "type": "datetime", "indexed": true, "summary": true},
            {"name": "done", "type": "bool", "default": false},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "topic", "type": "relation", "collection": "topics"},
            {"name": "note", "type": "relation", "collection": "notes"},
            {"name": "session", "type": "relation", "collection": "sessions"},
            {"name": "topic_ids", "type": "tags", "indexed": true, "description": "ids of related topics"},
            {"name": "created_at", "type": "datetime", "indexed": true},
            {"name": "updated_at", "type": "datetime"},
            {"name": "completed_at", "type": "datetime"}]}),
        json!({"name": "attachments", "description": "Attachment files kept on their own: ones no record links (orphans) from a legacy import", "fields": [
            {"name": "name", "type": "text", "required": true, "summary": true},
            {"name": "mime", "type": "text", "summary": true},
            {"name": "size", "type": "integer", "summary": true},
            {"name": "file", "type": "attachment", "required": true},
            {"name": "orphan", "type": "bool", "default": false, "indexed": true},
            {"name": "source", "type": "text", "description": "where it was found"},
            {"name": "created_at", "type": "datetime"}]}),
    ];
    defs.into_iter()
        .map(|v| serde_json::from_value(v).expect("the built-in Taskerino schema is valid JSON for CollectionSchema"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn schemas_are_valid_in_order() {
        let schemas = super::schemas();
        let mut known: Vec<String> = Vec::new();
        for s in &schemas {
            s.validate(&|name| known.iter().any(|k| k == name)).expect("valid");
            known.push(s.name.clone());
        }
        assert_eq!(known, ["companies", "contacts", "topics", "sessions", "notes", "tasks", "attachments"]);
    }
}
