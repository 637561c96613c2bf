//! Reports (GOV-3): a collection's records, filtered and projected, as CSV or XLSX — for
//! billing, accounting and anyone who lives in a spreadsheet.
//!
//! Rows come from the query engine (the same filter language, pages by cursor, so memory stays
//! at one page); with `group_by`, one row per distinct value with its record count and the sum
//! of `sum`. CSV is RFC 4180 (the `csv` crate) with a header row and nothing else, so it stays
//! data. XLSX (`rust_xlsxwriter`) has typed cells — numbers as numbers, date-times as Excel
//! dates, booleans as booleans — a bold, frozen header row, and a totals row under the data
//! summing every numeric column. The file is written beside its target and renamed into place.

use std::collections::BTreeMap;
use std::path::Path;

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::query::Query;
use crate::data::schema::FieldType;
use crate::engine::store::Store;
use crate::error::{Error, Result};

/// The file format of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReportFormat {
    #[default]
    Csv,
    Xlsx,
}

/// Options of [`Store::report`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportOptions {
    /// Default: CSV.
    pub format: ReportFormat,
    /// Records to include (the filter language); default all live records.
    pub filter: Option<String>,
    /// Columns, `id` or field names; default `id` and every field.
    pub columns: Option<Vec<String>>,
    /// One row per distinct value of this field, with a count (and `sum`).
    pub group_by: Option<String>,
    /// With `group_by`: the number field to add up per group.
    pub sum: Option<String>,
    /// Replace the output file when it exists. Default: false (an existing file is refused).
    pub overwrite: bool,
}

/// What a report holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReportSummary {
    pub columns: Vec<String>,
    /// Data rows (without header and totals).
    pub rows: u64,
}

/// One cell, typed.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// Canonical RFC 3339 text.
    DateTime(String),
}

impl Cell {
    fn of(kind: Option<FieldType>, value: Option<&Value>) -> Cell {
        let Some(value) = value else { return Cell::Empty };
        match (kind, value) {
            (_, Value::Null) => Cell::Empty,
            (Some(FieldType::Datetime), Value::String(s)) => Cell::DateTime(s.clone()),
            (_, Value::String(s)) => Cell::Text(s.clone()),
            (_, Value::Number(n)) => n.as_f64().map_or(Cell::Empty, Cell::Number),
            (_, Value::Bool(b)) => Cell::Bool(*b),
            (Some(FieldType::Tags), Value::Array(items)) => {
                Cell::Text(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            }
            (_, other) => {
                Cell::Text(String::from_utf8(crate::engine::canonical::canonical_json(other)).unwrap_or_default())
            }
        }
    }

    fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) | Cell::DateTime(s) => s.clone(),
            Cell::Number(n) => number_text(*n),
            Cell::Bool(b) => b.to_string(),
        }
    }
}

/// Whole numbers without a fraction, others as Rust prints them (shortest round trip).
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl Store {
    /// Writes a report of `collection` to `out` (see the module docs).
    pub fn report(&self, collection: &str, options: &ReportOptions, out: &Path) -> Result<ReportSummary> {
        let schema = self.collection(collection)?.schema;
        let kind = |name: &str| schema.field(name).map(|f| f.kind);
        let known = |name: &str| name == "id" || schema.field(name).is_some();
        let bad = |reason: String| Error::InvalidQuery(reason);
        let columns: Vec<String> = match &options.columns {
            Some(columns) => columns.clone(),
            None => std::iter::once("id".to_string()).chain(schema.fields.iter().map(|f| f.name.clone())).collect(),
        };
        if let Some(unknown) = columns.iter().find(|c| !known(c)) {
            return Err(bad(format!("no field `{unknown}` in `{collection}`")));
        }
        if options.sum.is_some() && options.group_by.is_none() {
            return Err(bad("`sum` needs `group_by`".into()));
        }
        if let Some(sum) = &options.sum {
            if !matches!(kind(sum), Some(FieldType::Integer | FieldType::Number)) {
                return Err(bad(format!("`{sum}` is not a number field, so it cannot be summed")));
            }
        }
        if let Some(group) = options.group_by.as_deref().filter(|g| !known(g)) {
            return Err(bad(format!("no field `{group}` in `{collection}`")));
        }

        // The fields the query must return.
        let mut wanted: Vec<String> = match &options.group_by {
            Some(group) => std::iter::once(group.clone()).chain(options.sum.clone()).collect(),
            None => columns.clone(),
        };
        wanted.retain(|f| f != "id");
        wanted.dedup();
        let mut query = Query {
            filter: options.filter.as_deref().map(crate::data::condition::Condition::from),
            limit: crate::data::query::MAX_LIMIT.min(1000),
            fields: Some(wanted),
            ..Query::default()
        };
        let (header, rows): (Vec<String>, Vec<Vec<Cell>>) = match &options.group_by {
            None => {
                let mut rows = Vec::new();
                loop {
                    let page = self.query(collection, &query)?;
                    for row in &page.rows {
                        // A report never leaves a column blank because its key is locked.
                        if let Some(field) = row.sealed.first() {
                            return Err(crate::data::encryption::sealed_error(collection, &row.id, field));
                        }
                        rows.push(
                            columns
                                .iter()
                                .map(|c| match c.as_str() {
                                    "id" => Cell::Text(row.id.clone()),
                                    field => Cell::of(kind(field), row.fields.get(field)),
                                })
                                .collect(),
                        );
                    }
                    match page.next_cursor {
                        Some(cursor) => query.cursor = Some(cursor),
                        None => break,
                    }
                }
                (columns.clone(), rows)
            }
            Some(group) => {
                // Groups by the value's text, in that order; the first record's cell is shown.
                let mut groups: BTreeMap<String, (Cell, u64, f64)> = BTreeMap::new();
                loop {
                    let page = self.query(collection, &query)?;
                    for row in &page.rows {
                        // A report never leaves a column blank because its key is locked.
                        if let Some(field) = row.sealed.first() {
                            return Err(crate::data::encryption::sealed_error(collection, &row.id, field));
                        }
                        let cell = match group.as_str() {
                            "id" => Cell::Text(row.id.clone()),
                            field => Cell::of(kind(field), row.fields.get(field)),
                        };
                        let add = options
                            .sum
                            .as_deref()
                            .and_then(|s| row.fields.get(s))
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0);
                        let entry = groups.entry(cell.text()).or_insert((cell, 0, 0.0));
                        entry.1 += 1;
                        entry.2 += add;
                    }
                    match page.next_cursor {
                        Some(cursor) => query.cursor = Some(cursor),
                        None => break,
                    }
                }
                let mut header = vec![group.clone(), "count".to_string()];
                header.extend(options.sum.iter().map(|s| format!("sum of {s}")));
                let rows = groups
                    .into_values()
                    .map(|(cell, count, sum)| {
                        let mut row = vec![cell, Cell::Number(count as f64)];
                        if options.sum.is_some() {
                            row.push(Cell::Number(sum));
                        }
                        row
                    })
                    .collect();
                (header, rows)
            }
        };
        crate::engine::fsutil::write_output(out, options.overwrite, |temp, _| match options.format {
            ReportFormat::Csv => write_csv(temp, &header, &rows),
            ReportFormat::Xlsx => write_xlsx(temp, collection, &header, &rows),
        })?;
        Ok(ReportSummary { columns: header, rows: rows.len() as u64 })
    }
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<Cell>]) -> Result<()> {
    let io = |e: csv::Error| Error::io("write", path, std::io::Error::other(e));
    let mut out = csv::Writer::from_path(path).map_err(io)?;
    out.write_record(header).map_err(io)?;
    for row in rows {
        out.write_record(row.iter().map(Cell::text)).map_err(io)?;
    }
    out.flush().map_err(|e| Error::io("write", path, e))
}

fn write_xlsx(path: &Path, sheet: &str, header: &[String], rows: &[Vec<Cell>]) -> Result<()> {
    let xlsx = |e: rust_xlsxwriter::XlsxError| Error::io("write", path, std::io::Error::other(e));
    let mut workbook = Workbook::new();
    let worksheet = workbook.add_worksheet();
    worksheet.set_name(sheet).map_err(xlsx)?;
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (col, name) in header.iter().enumerate() {
        worksheet.write_string_with_format(0, col as u16, name, &bold).map_err(xlsx)?;
    }
    worksheet.set_freeze_panes(1, 0).map_err(xlsx)?;
    let mut totals: Vec<Option<f64>> = vec![None; header.len()];
    for (i, row) in rows.iter().enumerate() {
        let r = i as u32 + 1;
        for (col, cell) in row.iter().enumerate() {
            let c = col as u16;
            match cell {
                Cell::Empty => {}
                Cell::Text(s) => {
                    worksheet.write_string(r, c, s).map_err(xlsx)?;
                }
                Cell::Number(n) => {
                    worksheet.write_number(r, c, *n).map_err(xlsx)?;
                    *totals[col].get_or_insert(0.0) += n;
                }
                Cell::Bool(b) => {
                    worksheet.write_boolean(r, c, *b).map_err(xlsx)?;
                }
                Cell::DateTime(s) => match excel_datetime(s) {
                    Some(dt) => {
                        worksheet.write_datetime_with_format(r, c, &dt, &date).map_err(xlsx)?;
                    }
                    None => {
                        worksheet.write_string(r, c, s).map_err(xlsx)?;
                    }
                },
            }
        }
    }
    let last = rows.len() as u32 + 1;
    worksheet.write_string_with_format(last, 0, "Total", &bold).map_err(xlsx)?;
    for (col, total) in totals.iter().enumerate().skip(1) {
        if let Some(total) = total {
            worksheet.write_number_with_format(last, col as u16, *total, &bold).map_err(xlsx)?;
        }
    }
    workbook.save(path).map_err(xlsx)
}

/// A canonical UTC date-time as Excel's, to the millisecond.
fn excel_datetime(text: &str) -> Option<ExcelDateTime> {
    let dt = crate::engine::timestamp::parse_datetime(text)?;
    let seconds = f64::from(dt.second()) + f64::from(dt.millisecond()) / 1000.0;
    ExcelDateTime::from_ymd(dt.year().try_into().ok()?, dt.month() as u8, dt.day())
        .ok()?
        .and_hms(u16::from(dt.hour()), dt.minute(), seconds)
        .ok()
}
