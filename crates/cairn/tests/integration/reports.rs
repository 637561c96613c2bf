//! CSV and XLSX reports, read back with standard readers (csv, calamine) and compared with
//! the query engine's answer for the same filter.

use std::collections::BTreeMap;

use cairn::{CollectionSchema, Query, ReportFormat, ReportOptions, Store, StoreOptions};
use calamine::{Data, Reader};
use serde_json::{json, Value};

fn invoices() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    store
        .create_collection(
            CollectionSchema::from_json(
                r#"{"name": "invoices", "fields": [
                    {"name": "client", "type": "text", "required": true},
                    {"name": "note", "type": "text"},
                    {"name": "hours", "type": "number"},
                    {"name": "amount", "type": "integer", "indexed": true},
                    {"name": "billed", "type": "datetime"},
                    {"name": "paid", "type": "bool"},
                    {"name": "tags", "type": "tags"}]}"#,
                "invoices",
            )
            .expect("schema"),
        )
        .expect("invoices");
    let clients = ["Acme, Inc.", "Bobby \"Tables\"", "Café Ünïcode", "Line\nbreak"];
    for i in 0..45 {
        let mut body = json!({
            "client": clients[i % 4],
            "hours": (i as f64) * 1.25,
            "amount": 100 * i as i64 + 7,
            "billed": format!("2026-{:02}-{:02}T09:{:02}:05.250Z", 1 + i % 12, 1 + i % 28, i % 60),
            "paid": i % 3 == 0,
            "tags": [format!("t{}", i % 2), "x"],
        });
        if i % 5 == 0 {
            body["note"] = json!("=cmd, with \"quotes\" and, commas");
        }
        store.create_with_id("invoices", &format!("inv{i:03}"), body).expect("create");
    }
    store.delete("invoices", "inv004", None).expect("deleted ones are not reported");
    (tmp, store)
}

/// The query engine's rows for `filter`, in id order, as field maps with the id.
fn query_rows(store: &Store, filter: &str) -> Vec<BTreeMap<String, Value>> {
    let mut query = Query {
        filter: Some(filter.into()),
        limit: 7,
        fields: Some(["client", "note", "hours", "amount", "billed", "paid", "tags"].map(String::from).to_vec()),
        ..Query::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.query("invoices", &query).expect("query");
        for row in page.rows {
            let mut map: BTreeMap<String, Value> = row.fields.into_iter().collect();
            map.insert("id".into(), json!(row.id));
            out.push(map);
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn csv_reports_read_back_as_the_query_answers() {
    let (tmp, store) = invoices();
    let out = tmp.path().join("unpaid.csv");
    let filter = "paid = false and amount >= 500";
    let options = ReportOptions { filter: Some(filter.into()), ..ReportOptions::default() };
    let summary = store.report("invoices", &options, &out).expect("report");
    let expected = query_rows(&store, filter);
    assert_eq!(summary.rows as usize, expected.len());
    assert!(expected.len() > 10);

    let mut reader = csv::Reader::from_path(&out).expect("csv");
    let header: Vec<String> = reader.headers().expect("header").iter().map(String::from).collect();
    assert_eq!(header, ["id", "client", "note", "hours", "amount", "billed", "paid", "tags"]);
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), expected.len());
    for (record, row) in records.iter().zip(&expected) {
        let field =
            |name: &str| record.get(header.iter().position(|h| h == name).expect("column")).expect("cell").to_string();
        assert_eq!(field("id"), row["id"].as_str().expect("id"));
        assert_eq!(field("client"), row["client"].as_str().expect("client"), "quotes, commas and newlines survive");
        assert_eq!(field("note"), row.get("note").and_then(Value::as_str).unwrap_or(""));
        assert_eq!(field("amount").parse::<i64>().expect("integer"), row["amount"].as_i64().expect("amount"));
        assert_eq!(field("hours").parse::<f64>().expect("number"), row["hours"].as_f64().expect("hours"));
        assert_eq!(field("billed"), row["billed"].as_str().expect("billed"));
        assert_eq!(field("paid"), "false");
        assert_eq!(
            field("tags"),
            row["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|t| t.as_str().expect("tag"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Grouped: one row per client, with count and sum.
    let out = tmp.path().join("by-client.csv");
    let options = ReportOptions {
        group_by: Some("client".into()),
        sum: Some("amount".into()),
        columns: None,
        ..ReportOptions::default()
    };
    store.report("invoices", &options, &out).expect("grouped");
    let mut by_client: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for row in query_rows(&store, "amount >= 0") {
        let entry = by_client.entry(row["client"].as_str().expect("client").to_string()).or_default();
        entry.0 += 1;
        entry.1 += row["amount"].as_i64().expect("amount");
    }
    let mut reader = csv::Reader::from_path(&out).expect("csv");
    assert_eq!(reader.headers().expect("header").iter().collect::<Vec<_>>(), ["client", "count", "sum of amount"]);
    let got: BTreeMap<String, (u64, i64)> = reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            (r[0].to_string(), (r[1].parse().expect("count"), r[2].parse().expect("sum")))
        })
        .collect();
    assert_eq!(got, by_client);
}

#[test]
fn xlsx_reports_have_typed_cells_a_header_and_totals() {
    let (tmp, store) = invoices();
    let out = tmp.path().join("report.xlsx");
    let filter = "paid = true";
    let options = ReportOptions {
        format: ReportFormat::Xlsx,
        filter: Some(filter.into()),
        columns: Some(["id", "client", "amount", "hours", "billed", "paid"].map(String::from).to_vec()),
        ..ReportOptions::default()
    };
    store.report("invoices", &options, &out).expect("report");
    let expected = query_rows(&store, filter);

    let mut workbook = calamine::open_workbook_auto(&out).expect("open xlsx");
    let range = workbook.worksheet_range("invoices").expect("sheet");
    let rows: Vec<&[Data]> = range.rows().collect();
    assert_eq!(rows.len(), expected.len() + 2, "header, data, totals");
    assert_eq!(
        rows[0].iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ["id", "client", "amount", "hours", "billed", "paid"]
    );
    for (cells, row) in rows[1..=expected.len()].iter().zip(&expected) {
        assert_eq!(cells[0], Data::String(row["id"].as_str().expect("id").into()));
        assert_eq!(cells[1], Data::String(row["client"].as_str().expect("client").into()));
        assert_eq!(cells[2], Data::Float(row["amount"].as_f64().expect("amount")), "numbers are numbers");
        assert_eq!(cells[3], Data::Float(row["hours"].as_f64().expect("hours")));
        let Data::DateTime(dt) = &cells[4] else { panic!("dates are dates: {:?}", cells[4]) };
        let billed = row["billed"].as_str().expect("billed");
        let shown = format!("{:?}Z", dt.as_datetime().expect("a date-time"));
        assert_eq!(shown, billed);
        assert_eq!(cells[5], Data::Bool(true));
    }
    let totals = rows[expected.len() + 1];
    assert_eq!(totals[0], Data::String("Total".into()));
    let sum: f64 = expected.iter().map(|r| r["amount"].as_f64().expect("amount")).sum();
    assert_eq!(totals[2], Data::Float(sum));

    let err = store
        .report("invoices", &ReportOptions { columns: Some(vec!["ghost".into()]), ..ReportOptions::default() }, &out)
        .expect_err("unknown column");
    assert!(err.to_string().contains("ghost"), "{err}");
    let err = store
        .report(
            "invoices",
            &ReportOptions { group_by: Some("client".into()), sum: Some("client".into()), ..ReportOptions::default() },
            &out,
        )
        .expect_err("text cannot be summed");
    assert!(err.to_string().contains("cannot be summed"), "{err}");
}
