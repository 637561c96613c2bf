use anyhow::Result;
use cairn::Query;
use clap::{Args, Subcommand};

use super::Context;
use crate::output::{clip, table};
use crate::UsageError;

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The collection.
    collection: String,
    /// Filter, e.g. 'status = "completed" and started_at >= 2025-06-01 and tags has "acme"'.
    #[arg(long, short = 'f')]
    filter: Option<String>,
    /// Sort keys, e.g. -started_at,name (leading - for descending).
    #[arg(long, short = 's', allow_hyphen_values = true)]
    sort: Option<String>,
    /// Records per page.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Continue after the page that printed this cursor.
    #[arg(long, conflicts_with = "offset")]
    cursor: Option<String>,
    /// Skip this many records.
    #[arg(long)]
    offset: Option<usize>,
    /// Fields to show, comma-separated (default: the collection's summary fields).
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Print only the number of matching records.
    #[arg(long, conflicts_with_all = ["explain"])]
    count: bool,
    /// Print how the query runs (which index, or a scan) instead of running it.
    #[arg(long)]
    explain: bool,
}

pub fn run(ctx: &Context, args: QueryArgs) -> Result<()> {
    let store = ctx.open_read()?;
    if args.count {
        let n = store.count(&args.collection, args.filter.as_deref())?;
        ctx.out.show(&serde_json::json!({ "count": n }), || println!("{n}"));
        return Ok(());
    }
    let query = Query {
        filter: args.filter.clone().map(Into::into),
        sort: args.sort.clone(),
        limit: args.limit,
        offset: args.offset,
        cursor: args.cursor.clone(),
        fields: (!args.fields.is_empty()).then(|| args.fields.clone()),
    };
    if args.explain {
        let plan = store.explain(&args.collection, &query)?;
        ctx.out.show(&plan, || {
            for step in &plan {
                println!("{step}");
            }
        });
        return Ok(());
    }
    let page = store.query(&args.collection, &query)?;
    ctx.out.show(&page, || {
        let mut columns: Vec<String> = Vec::new();
        for row in &page.rows {
            for key in row.fields.keys().chain(&row.sealed) {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
        if let Some(wanted) = &query.fields {
            columns.sort_by_key(|c| wanted.iter().position(|w| w == c));
        }
        let mut header = vec!["id"];
        header.extend(columns.iter().map(String::as_str));
        let rows = page
            .rows
            .iter()
            .map(|row| {
                let mut cells = vec![row.id.clone()];
                cells.extend(columns.iter().map(|c| match row.fields.get(c) {
                    Some(serde_json::Value::String(s)) => clip(s, 40),
                    Some(v) => clip(&v.to_string(), 40),
                    None if row.sealed.contains(c) => super::SEALED_CELL.to_string(),
                    None => String::new(),
                }));
                cells
            })
            .collect();
        println!("{}", table(&header, rows));
        match &page.next_cursor {
            Some(cursor) => println!("{} rows; next page: --cursor {cursor}", page.rows.len()),
            None => println!("{} rows", page.rows.len()),
        }
    });
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// List a collection's indexes.
    List {
        /// The collection.
        collection: String,
    },
    /// Index a field and build the index over existing records (readers are not blocked).
    Add {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
    },
    /// Drop a field's index.
    Drop {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
    },
}

pub fn run_index(ctx: &Context, cmd: IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::List { collection } => {
            let list = ctx.open_read()?.indexes(&collection)?;
            ctx.out.show(&list, || {
                let rows = list.iter().map(|i| vec![i.field.clone(), i.kind.to_string()]).collect();
                println!("{}", table(&["field", "index"], rows));
            });
        }
        IndexCommand::Add { collection, field } => {
            let store = ctx.open_write()?;
            let total = store.collection(&collection)?.live_records;
            let bar = if ctx.out.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total) };
            bar.set_style(
                indicatif::ProgressStyle::with_template("indexing {prefix} {bar:30} {pos}/{len} records")
                    .map_err(|e| UsageError(e.to_string()))?,
            );
            bar.set_prefix(format!("{collection}.{field}"));
            let shown = bar.clone();
            let built = store.add_index(&collection, &field, move |done| shown.set_position(done))?;
            bar.finish_and_clear();
            let report =
                serde_json::json!({ "collection": collection, "field": field, "records": total, "built": built });
            ctx.out.show(&report, || {
                if built {
                    println!("indexed {collection}.{field} over {total} records")
                } else {
                    println!("{collection}.{field} is indexed already; nothing changed")
                }
            });
        }
        IndexCommand::Drop { collection, field } => {
            let dropped = ctx.open_write()?.drop_index(&collection, &field)?;
            let report = serde_json::json!({ "collection": collection, "field": field, "dropped": dropped });
            ctx.out.show(&report, || {
                if dropped {
                    println!("dropped the index of {collection}.{field}")
                } else {
                    println!("{collection}.{field} has no index; nothing changed")
                }
            });
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The collection.
    collection: String,
    /// Words (all must match), prefix* words and "quoted phrases".
    terms: String,
    /// A filter the hits must also match.
    #[arg(long, short = 'f')]
    filter: Option<String>,
    /// At most this many.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Skip this many first.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Fields to show with each hit, comma-separated.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
}

pub fn run_search(ctx: &Context, args: SearchArgs) -> Result<()> {
    let search = cairn::Search {
        terms: args.terms,
        filter: args.filter.map(Into::into),
        limit: args.limit,
        offset: args.offset,
        fields: (!args.fields.is_empty()).then_some(args.fields),
        ..cairn::Search::default()
    };
    let hits = ctx.open_read()?.search(&args.collection, &search)?;
    ctx.out.show(&hits, || {
        let rows = hits
            .iter()
            .map(|h| {
                let fields: Vec<String> = h
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect();
                vec![h.id.clone(), format!("{:.2}", h.rank), clip(&h.snippet, 70), clip(&fields.join("; "), 50)]
            })
            .collect();
        println!("{}", table(&["id", "rank", "snippet", "fields"], rows));
        println!("{} hits", hits.len());
    });
    Ok(())
}
