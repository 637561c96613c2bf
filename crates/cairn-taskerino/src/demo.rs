//! The first-run demo: a Taskerino-like store filled with realistic sample data.
//!
//! Data is generated from a fixed seed, so every run produces the same records and the
//! README's "try next" commands name ids that exist.

use serde::Serialize;
use serde_json::{json, Value};

use cairn::{Error, Result, Store, Timestamp};

use crate::schema as taskerino;

/// How much demo data to make.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of sessions. Default: 120. Notes and tasks scale with it.
    pub sessions: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { sessions: 120 }
    }
}

/// What the demo created.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DemoReport {
    /// False when the demo collections were already there and nothing was written.
    pub created: bool,
    /// Records per collection, in creation order.
    pub counts: Vec<(String, u64)>,
    /// A few ids worth looking at.
    pub example_ids: Vec<(String, String)>,
}

/// A small deterministic generator (SplitMix64): the demo needs repeatable variety, not
/// statistical quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const COMPANIES: &[(&str, &str)] = &[
    ("Acme Corp", "acme.example"),
    ("Globex", "globex.example"),
    ("Initech", "initech.example"),
    ("Umbrella Health", "umbrella.example"),
    ("Stark Studios", "stark.example"),
    ("Wayne Logistics", "wayne.example"),
    ("Hooli", "hooli.example"),
    ("Vandelay Imports", "vandelay.example"),
];
const FIRST: &[&str] =
    &["Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Iris", "Jon", "Kemal", "Lena"];
const LAST: &[&str] =
    &["Okafor", "Schmidt", "Nguyen", "García", "Kowalski", "Haddad", "Smith", "Tanaka", "Rossi", "Berg"];
const ROLES: &[&str] = &["CTO", "Product manager", "Designer", "Account lead", "Engineer", "Founder"];
const TOPICS: &[(&str, &str)] = &[
    ("Q4 roadmap", "project"),
    ("Hiring", "area"),
    ("Onboarding revamp", "project"),
    ("Billing migration", "project"),
    ("Customer research", "area"),
    ("Infrastructure", "area"),
    ("Mobile app", "project"),
    ("Security review", "project"),
    ("Personal", "area"),
    ("Reading list", "area"),
];
const ACTIVITIES: &[&str] = &[
    "Code review",
    "Design sync",
    "Customer call",
    "Bug triage",
    "Sprint planning",
    "Writing spec",
    "Debugging checkout",
    "Interview loop",
    "Quarterly report",
    "Pairing session",
];
const TAGS: &[&str] = &["urgent", "follow-up", "meeting", "research", "bug", "design", "billing", "hiring", "idea"];
const STATUSES: &[&str] = &["completed", "completed", "completed", "interrupted", "active"];
const SENTENCES: &[&str] = &[
    "Walked through the checkout flow and found the retry logic drops the second payment attempt.",
    "Agreed to ship the onboarding checklist behind a flag next sprint.",
    "The customer wants CSV exports of their session history, grouped by client.",
    "Latency spikes line up with the nightly backup job; move it or throttle it.",
    "Draft the migration plan with a rollback for every step.",
    "Need a second opinion on the caching strategy before merging.",
    "Reviewed the dashboard mock-ups; the empty states need work.",
    "Candidate was strong on systems design, weaker on testing.",
    "Renewal is at risk unless the audit trail ships this quarter.",
    "Café meeting notes: the résumé pipeline still loses attachments.",
];

/// Creates the Taskerino collections in `store` and fills them. Does nothing (and says so in
/// the report) when the collections already exist with data.
pub fn install(store: &Store, options: &DemoOptions) -> Result<DemoReport> {
    let schemas = taskerino::schemas();
    let existing: Vec<String> = store.collections()?.into_iter().map(|c| c.schema.name).collect();
    if schemas.iter().all(|s| existing.contains(&s.name)) {
        let counts = schemas
            .iter()
            .map(|s| Ok((s.name.clone(), store.collection(&s.name)?.live_records)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(DemoReport { created: false, counts, example_ids: example_ids() });
    }
    if let Some(clash) = schemas.iter().find(|s| existing.contains(&s.name)) {
        return Err(Error::NotAllowed(format!(
            "this store already has a `{}` collection that is not the demo's; run the demo in another directory (--dir)",
            clash.name
        )));
    }
    let records = generate(options);
    let counts = store.as_actor("demo").transaction(move |tx| {
        let mut counts = Vec::new();
        for schema in schemas {
            tx.create_collection(schema.clone())?;
            let mut n = 0;
            for (collection, id, body) in records.iter().filter(|(c, _, _)| *c == schema.name) {
                tx.create(collection, Some(id), body.clone())?;
                n += 1;
            }
            counts.push((schema.name, n));
        }
        Ok(counts)
    })?;
    let store = store.as_actor("demo");
    // A little history so that `history`, `undo` and `revert` have something to show.
    store.patch("tasks", "task-0001", json!({"status": "in-progress"}), None)?;
    store.patch("tasks", "task-0001", json!({"status": "done", "done": true}), None)?;
    store.patch("sessions", "session-0001", json!({"name": "Checkout debugging with Acme"}), None)?;
    Ok(DemoReport { created: true, counts, example_ids: example_ids() })
}

fn example_ids() -> Vec<(String, String)> {
    [("sessions", "session-0001"), ("notes", "note-0001"), ("tasks", "task-0001"), ("contacts", "contact-01")]
        .map(|(c, id)| (c.to_string(), id.to_string()))
        .to_vec()
}

fn generate(options: &DemoOptions) -> Vec<(String, String, Value)> {
    let mut rng = Rng(0x00C0_FFEE);
    let mut out = Vec::new();
    let mut push = |c: &str, id: String, body: Value| out.push((c.to_string(), id, body));
    let day_ms = 86_400_000i64;
    let start = Timestamp::now().as_millis() - 180 * day_ms;
    let at = |ms: i64| Timestamp(ms).to_string();

    for (i, (name, site)) in COMPANIES.iter().enumerate() {
        push(
            "companies",
            format!("company-{:02}", i + 1),
            json!({"name": name, "website": format!("https://{site}"), "tags": ["client"]}),
        );
    }
    for i in 0..20 {
        let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
        let company = format!("company-{:02}", rng.below(COMPANIES.len()) + 1);
        push(
            "contacts",
            format!("contact-{:02}", i + 1),
            json!({
                "name": format!("{first} {last}"),
                "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), i),
                "phone": format!("+1-555-{:04}", rng.below(10_000)),
                "role": rng.pick(ROLES),
                "company": company,
            }),
        );
    }
    for (i, (name, kind)) in TOPICS.iter().enumerate() {
        push("topics", format!("topic-{:02}", i + 1), json!({"name": name, "kind": kind}));
    }
    for i in 0..options.sessions {
        let begun =
            start + (i as i64) * (180 * day_ms / options.sessions.max(1) as i64) + rng.below(8 * 3_600_000) as i64;
        let minutes = 15 + rng.below(150) as i64;
        let status = rng.pick(STATUSES);
        let company = rng.below(COMPANIES.len());
        let shots: Vec<Value> = (0..rng.below(6))
            .map(|k| json!({"timestamp": at(begun + k as i64 * 300_000), "attachmentId": format!("att-{i}-{k}"), "analysis": rng.pick(SENTENCES)}))
            .collect();
        let audio: Vec<Value> = (0..rng.below(4))
            .map(|k| json!({"timestamp": at(begun + k as i64 * 600_000), "duration": 30 + rng.below(600), "transcript": rng.pick(SENTENCES)}))
            .collect();
        let mut body = json!({
            "name": format!("{} with {}", rng.pick(ACTIVITIES), COMPANIES[company].0),
            "description": rng.pick(SENTENCES),
            "status": status,
            "started_at": at(begun),
            "tags": [rng.pick(TAGS), COMPANIES[company].0.split(' ').next().unwrap_or("client").to_lowercase()],
            "company": format!("company-{:02}", company + 1),
            "topic_ids": [format!("topic-{:02}", rng.below(TOPICS.len()) + 1)],
            "created_at": at(begun),
            "screenshots": shots,
            "audio_segments": audio,
            "summary": {"narrative": rng.pick(SENTENCES), "highlights": [rng.pick(SENTENCES)], "actionItems": [rng.pick(SENTENCES)]},
        });
        if status != "active" {
            body["ended_at"] = json!(at(begun + minutes * 60_000));
        }
        push("sessions", format!("session-{:04}", i + 1), body);
    }
    for i in 0..options.sessions * 2 {
        let session = rng.below(options.sessions.max(1)) + 1;
        let from_session = rng.chance(60);
        let mut body = json!({
            "content": format!("{} {}", rng.pick(SENTENCES), rng.pick(SENTENCES)),
            "summary": rng.pick(SENTENCES).split(';').next().unwrap_or_default(),
            "timestamp": at(start + rng.below(180) as i64 * day_ms),
            "source": if from_session { "session" } else { "manual" },
            "tags": [rng.pick(TAGS)],
            "topic": format!("topic-{:02}", rng.below(TOPICS.len()) + 1),
            "pinned": rng.chance(10),
        });
        body["created_at"] = body["timestamp"].clone();
        if from_session {
            body["session"] = json!(format!("session-{session:04}"));
        }
        push("notes", format!("note-{:04}", i + 1), body);
    }
    for i in 0..options.sessions * 3 / 2 {
        let done = rng.chance(40);
        let mut body = json!({
            "title": rng.pick(SENTENCES).split([',', ';', '.']).next().unwrap_or("Follow up"),
            "status": if done { "done" } else { rng.pick(&["todo", "todo", "in-progress", "blocked"]) },
            "priority": rng.pick(&["low", "medium", "medium", "high", "urgent"]),
            "done": done,
            "tags": [rng.pick(TAGS)],
            "note": format!("note-{:04}", rng.below(options.sessions * 2) + 1),
        });
        if rng.chance(70) {
            body["due_date"] = json!(at(start + (150 + rng.below(60)) as i64 * day_ms));
        }
        push("tasks", format!("task-{:04}", i + 1), body);
    }
    // The first task starts open so the demo's own history edits make sense.
    if let Some(task) = out.iter_mut().find(|(_, id, _)| id == "task-0001") {
        task.2["status"] = json!("todo");
        task.2["done"] = json!(false);
    }
    out
}
