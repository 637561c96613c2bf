//! Full-text search: ranking, prefixes, phrases, diacritics, filters, and an index that is
//! always in step with the data.

use cairn::{CollectionSchema, Error, Search, Store};
use serde_json::json;

use crate::temp_store;

fn notes(store: &Store) {
    let schema = CollectionSchema::from_json(
        r#"{"name": "notes", "fields": [
            {"name": "title", "type": "text", "required": true, "fulltext": true, "summary": true},
            {"name": "content", "type": "text", "fulltext": true},
            {"name": "tags", "type": "tags", "fulltext": true},
            {"name": "status", "type": "text", "indexed": true}]}"#,
        "notes",
    )
    .expect("schema");
    store.create_collection(schema).expect("notes");
    let docs = [
        ("a", "Meeting with Acme", "Discussed the checkout flow and the retry logic.", "open"),
        ("b", "Résumé review", "The candidate's résumé mentions meetings twice: meeting, meeting.", "open"),
        ("c", "Groceries", "Milk, eggs, and a note about the checkout queue.", "done"),
        ("d", "Checkout flow redesign", "Retry logic drops the second payment attempt in checkout.", "done"),
    ];
    for (id, title, content, status) in docs {
        store
            .create_with_id(
                "notes",
                id,
                json!({"title": title, "content": content, "status": status, "tags": ["work"]}),
            )
            .expect("note");
    }
}

fn ids(store: &Store, search: Search) -> Vec<String> {
    store.search("notes", &search).expect("search").into_iter().map(|h| h.id).collect()
}

fn terms(t: &str) -> Search {
    Search { terms: t.into(), ..Search::default() }
}

#[test]
fn ranks_prefixes_phrases_and_folds_case_and_diacritics() {
    let (_dir, store) = temp_store();
    notes(&store);
    // bm25: the note with "checkout" in its title and twice in its text ranks first.
    let hits = ids(&store, terms("checkout"));
    assert_eq!(hits[0], "d");
    assert_eq!(
        hits.iter().skip(1).cloned().collect::<std::collections::BTreeSet<_>>(),
        ["a".to_string(), "c".to_string()].into()
    );
    assert_eq!(ids(&store, terms("meet*")), ["b", "a"], "prefix; b has it three times");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(ids(&store, terms("\"checkout flow\""))), ["a", "d"], "phrase");
    assert_eq!(ids(&store, terms("\"flow checkout\"")), Vec::<String>::new(), "phrase order matters");
    assert_eq!(ids(&store, terms("RESUME")), ["b"], "case and diacritics folded");
    assert_eq!(sorted(ids(&store, terms("retry checkout"))), ["a", "d"], "all words must match");
    assert_eq!(ids(&store, terms("work")).len(), 4, "tags are searchable");
    // Hostile input is just words.
    assert!(ids(&store, terms("title:acme OR NEAR(\"x\" ) *")).is_empty());
    assert!(matches!(store.search("notes", &terms("  - ")), Err(Error::InvalidQuery(_))));
}

#[test]
fn combines_with_filters_snippets_and_pages() {
    let (_dir, store) = temp_store();
    notes(&store);
    let filtered = Search { filter: Some("status = \"done\"".into()), ..terms("checkout") };
    assert_eq!(ids(&store, filtered), ["d", "c"]);
    // A filter on a field without a value column reads the bodies of the matches.
    let from_body =
        Search { filter: Some("content contains \"payment\" or title = \"Groceries\"".into()), ..terms("checkout") };
    assert_eq!(ids(&store, from_body), ["d", "c"]);
    let hits =
        store.search("notes", &Search { highlight: ("<b>".into(), "</b>".into()), ..terms("retry") }).expect("search");
    let d = hits.iter().find(|h| h.id == "d").expect("d matches");
    assert!(d.snippet.contains("<b>Retry</b>"), "{}", d.snippet);
    assert_eq!(
        d.fields,
        json!({"title": "Checkout flow redesign"}).as_object().cloned().expect("map"),
        "summary fields"
    );
    assert!(hits.windows(2).all(|w| w[0].rank <= w[1].rank));
    let all = ids(&store, terms("checkout"));
    let page2 = Search { limit: 1, offset: 1, ..terms("checkout") };
    assert_eq!(ids(&store, page2), all[1..2]);
    let bad = Search { filter: Some("colour = 1".into()), ..terms("checkout") };
    assert!(matches!(store.search("notes", &bad), Err(Error::InvalidFilter { .. })));
}

#[test]
fn the_index_follows_every_write_in_its_transaction() {
    let (_dir, store) = temp_store();
    notes(&store);
    store.patch("notes", "c", json!({"content": "Only bread today."}), None).expect("patch");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(ids(&store, terms("checkout"))), ["a", "d"], "c's old text is gone from the index");
    assert_eq!(ids(&store, terms("bread")), ["c"]);
    store.delete("notes", "d", None).expect("delete");
    assert_eq!(ids(&store, terms("checkout")), ["a"]);
    store.undo("notes", "d").expect("undelete");
    assert_eq!(sorted(ids(&store, terms("checkout"))), ["a", "d"]);
    // A failed transaction leaves the index as it was.
    let failed = store.transaction(|tx| {
        tx.patch("notes", "a", &json!({"content": "nothing about carts"}), None)?;
        tx.create("notes", Some("e"), json!({"title": 5}))
    });
    assert!(failed.is_err());
    assert_eq!(sorted(ids(&store, terms("checkout"))), ["a", "d"]);
    assert!(ids(&store, terms("carts")).is_empty());
    store.delete("notes", "b", None).expect("delete");
    store.purge("notes", "b").expect("purge");
    assert!(ids(&store, terms("resume")).is_empty());
}

#[test]
fn full_text_is_built_when_added_to_a_populated_collection() {
    let (_dir, store) = temp_store();
    let schema =
        CollectionSchema::from_json(r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#, "s")
            .expect("schema");
    store.create_collection(schema.clone()).expect("notes");
    for i in 0..50 {
        store
            .create_with_id("notes", &format!("n{i}"), json!({"title": format!("note number {i} about café")}))
            .expect("note");
    }
    assert!(matches!(store.search("notes", &terms("cafe")), Err(Error::InvalidQuery(_))));
    let mut with_fts = schema;
    with_fts.fields[0].fulltext = true;
    store.update_collection(with_fts.clone()).expect("add fulltext");
    assert_eq!(store.search("notes", &Search { limit: 100, ..terms("cafe") }).expect("search").len(), 50);
    with_fts.fields[0].fulltext = false;
    store.update_collection(with_fts).expect("drop fulltext");
    assert!(matches!(store.search("notes", &terms("cafe")), Err(Error::InvalidQuery(_))));
}
