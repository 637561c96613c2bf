//! The job queue and its schedules: list, inspect, enqueue, cancel, retry, restart and
//! delete jobs; list, add, remove and run schedules. Admins only (a job runs with the
//! store's authority, not the caller's).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, AppState, Caller, Typed, Q};
use crate::backend::JobAction;
use crate::openapi::{AnyObject, ItemsDoc};
use crate::problem::Problem;

/// The most jobs one answer carries.
const MAX_JOBS: usize = 500;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, enqueue))
        .routes(routes!(stats))
        .routes(routes!(get, delete))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(restart))
        .routes(routes!(schedules, add_schedule))
        .routes(routes!(remove_schedule))
        .routes(routes!(run_schedule))
}

/// A job in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct JobPath {
    /// The job's id.
    #[param(minimum = 1)]
    id: i64,
}

/// A schedule in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SchedulePath {
    /// The schedule's name.
    name: String,
}

/// Which jobs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// `available`, `scheduled`, `running`, `retryable`, `completed`, `cancelled` or
    /// `discarded` (`dead` is the same).
    #[param(pattern = "^(available|scheduled|running|retryable|completed|cancelled|discarded|dead)$")]
    state: Option<String>,
    /// One queue's jobs.
    queue: Option<String>,
    /// One kind's jobs.
    kind: Option<String>,
    /// Jobs older than this one (the next page: the last id of the page before).
    #[param(minimum = 1)]
    before_id: Option<i64>,
    /// At most this many, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

/// A job to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewJobBody {
    /// What runs it: a registered handler's kind, `command` (an allow-listed program) or a
    /// built-in `cairn.*` task.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    kind: String,
    /// The handler's arguments.
    #[schema(value_type = Option<Object>)]
    args: Option<Value>,
    /// Default: `default`.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    queue: Option<String>,
    /// Lower runs first (default 0).
    priority: Option<i64>,
    /// Not before this time (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    run_at: Option<cairn::Timestamp>,
    /// Attempts before it is dead, 1 to 1000 (default 20).
    #[schema(minimum = 1, maximum = 1000)]
    max_attempts: Option<i64>,
    /// Labels to find it by.
    #[schema(max_items = 20)]
    tags: Option<Vec<Tag>>,
    /// Enqueue only when no job holds the same key; the answer is then that job.
    #[serde(default, deserialize_with = "object_only")]
    unique: Option<UniqueBody>,
}

/// A job's arguments: an object (`{}` when absent).
fn arguments(args: Option<Value>) -> Result<Value, Problem> {
    match args {
        None | Some(Value::Null) => Ok(json!({})),
        Some(args @ Value::Object(_)) => Ok(args),
        Some(_) => Err(Problem::invalid("`args` must be an object")),
    }
}

/// An optional member that must be an object (serde would also read a struct from an array).
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => serde_json::from_value(value).map(Some).map_err(serde::de::Error::custom),
        Some(_) => Err(serde::de::Error::custom("expected an object")),
    }
}

/// A label: 1 to 100 characters.
#[derive(Debug, Deserialize)]
struct Tag(String);

impl utoipa::PartialSchema for Tag {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(100))
            .description(Some("A label: 1 to 100 characters."))
            .into()
    }
}

impl ToSchema for Tag {}

/// The longest period or window in seconds (a hundred years).
const MAX_SECONDS: u64 = 3_155_760_000;

/// How a job is unique.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UniqueBody {
    /// Include the arguments in the key (otherwise kind and queue alone).
    by_args: Option<bool>,
    /// Only within periods of this many seconds.
    #[schema(minimum = 1, maximum = 3_155_760_000_u64)]
    period_seconds: Option<u64>,
}

/// A schedule to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    name: String,
    /// Five fields (minute hour day month weekday), six with seconds first, or `@daily` …
    #[schema(min_length = 1)]
    cron: String,
    /// An IANA time zone (default `UTC`).
    time_zone: Option<String>,
    /// The kind of job each occurrence enqueues.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    kind: String,
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    queue: Option<String>,
    #[schema(value_type = Option<Object>)]
    args: Option<Value>,
    /// After downtime: `none`, `one` (the default) or `all` of the missed occurrences.
    #[schema(pattern = "^(none|one|all)$")]
    catch_up: Option<String>,
    /// How late a missed occurrence may be and still run, in seconds (default a day).
    #[schema(maximum = 3_155_760_000_u64)]
    catch_up_window_seconds: Option<u64>,
    /// Replace the schedule of this name if there is one (keeping when it last fired).
    replace: Option<bool>,
}

/// Jobs, newest first, and the id to continue before.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", operation_id = "list_jobs",
    params(ListParams),
    responses((status = 200, description = "`{\"items\", \"next_before_id\"}`", body = AnyObject)))]
async fn list(_: Admin, State(state): State<AppState>, Q(params): Q<ListParams>) -> Result<Json<Value>, Problem> {
    if let Some(before) = params.before_id.filter(|id| *id < 1) {
        return Err(Problem::invalid(format!("before_id must be a job id (1 or more), not {before}")));
    }
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_JOBS as u64 {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_JOBS}, not {limit}")));
    }
    let filter = cairn::JobFilter {
        state: params.state.as_deref().map(cairn::JobState::parse).transpose()?,
        queue: params.queue,
        kind: params.kind,
        before_id: params.before_id,
        limit: limit as usize,
    };
    let jobs = state.backend.jobs(filter).await?;
    let next = (jobs.len() as u64 == limit).then(|| jobs.last().map(|j| j.id)).flatten();
    Ok(Json(json!({"items": jobs, "next_before_id": next})))
}

/// Enqueues a job: 201 with `{"job", "duplicate": false}`, or 200 with the unique job that
/// already holds its key and `"duplicate": true`.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", operation_id = "enqueue_job",
    request_body = NewJobBody,
    responses((status = 201, description = "the job", body = AnyObject),
        (status = 200, description = "the unique job already there", body = AnyObject)))]
async fn enqueue(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Typed(body): Typed<NewJobBody>,
) -> Result<Response, Problem> {
    let mut job = cairn::NewJob::new(&body.kind, arguments(body.args)?);
    if let Some(queue) = &body.queue {
        job = job.queue(queue);
    }
    job.priority = body.priority.unwrap_or(0);
    job.run_at = body.run_at;
    job.max_attempts = body.max_attempts.unwrap_or(job.max_attempts);
    job.tags = body.tags.unwrap_or_default().into_iter().map(|t| t.0).collect();
    if body.unique.as_ref().and_then(|u| u.period_seconds).is_some_and(|s| s > MAX_SECONDS) {
        return Err(Problem::invalid(format!("unique.period_seconds must be at most {MAX_SECONDS}")));
    }
    job.unique = body.unique.map(|u| {
        let mut unique = cairn::UniqueOptions::default();
        unique.by_args = u.by_args.unwrap_or(false);
        unique.period_seconds = u.period_seconds;
        unique
    });
    let enqueued = state.backend.enqueue(caller, job).await?;
    let status = if enqueued.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(enqueued)).into_response())
}

/// Each queue's jobs by state, its limit and whether it is paused.
#[utoipa::path(get, path = "/api/jobs/stats", tag = "jobs", operation_id = "job_stats",
    responses((status = 200, description = "the queues", body = ItemsDoc)))]
async fn stats(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.job_stats().await?})))
}

/// One job: state, attempts, progress, result, every error.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", operation_id = "get_job",
    params(JobPath),
    responses((status = 200, description = "the job", body = AnyObject)))]
async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<cairn::Job>, Problem> {
    Ok(Json(state.backend.job(id).await?))
}

async fn act(
    state: AppState,
    caller: cairn::Principal,
    id: i64,
    action: JobAction,
) -> Result<Json<cairn::Job>, Problem> {
    Ok(Json(state.backend.job_action(caller, id, action).await?))
}

/// Deletes a job that is not running (cancel it first).
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs", operation_id = "delete_job",
    params(JobPath),
    responses((status = 200, description = "the job as it was", body = AnyObject)))]
async fn delete(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<cairn::Job>, Problem> {
    act(state, caller, id, JobAction::Delete).await
}

/// Cancels a job: a waiting one at once, a running one is told to stop.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job",
    params(JobPath),
    responses((status = 200, description = "the job", body = AnyObject)))]
async fn cancel(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<cairn::Job>, Problem> {
    act(state, caller, id, JobAction::Cancel).await
}

/// Runs a dead or cancelled job again, with fresh attempts.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job",
    params(JobPath),
    responses((status = 200, description = "the job", body = AnyObject)))]
async fn retry(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<cairn::Job>, Problem> {
    act(state, caller, id, JobAction::Retry).await
}

/// Runs a job again from the start (a running attempt is fenced off and told to stop).
#[utoipa::path(post, path = "/api/jobs/{id}/restart", tag = "jobs", operation_id = "restart_job",
    params(JobPath),
    responses((status = 200, description = "the job", body = AnyObject)))]
async fn restart(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<cairn::Job>, Problem> {
    act(state, caller, id, JobAction::Restart).await
}

/// Every schedule, with when it last fired and fires next.
#[utoipa::path(get, path = "/api/schedules", tag = "jobs", operation_id = "list_schedules",
    responses((status = 200, description = "the schedules", body = ItemsDoc)))]
async fn schedules(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.schedules().await?})))
}

/// Adds a schedule (409 if the name is taken, unless `replace`).
#[utoipa::path(post, path = "/api/schedules", tag = "jobs", operation_id = "add_schedule",
    request_body = ScheduleBody,
    responses((status = 201, description = "the schedule", body = AnyObject)))]
async fn add_schedule(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Typed(body): Typed<ScheduleBody>,
) -> Result<Response, Problem> {
    let mut spec = cairn::ScheduleSpec::new(&body.name, &body.cron, &body.kind);
    if let Some(tz) = &body.time_zone {
        spec = spec.time_zone(tz);
    }
    if let Some(queue) = &body.queue {
        spec = spec.queue(queue);
    }
    spec = spec.args(arguments(body.args)?);
    let policy = body.catch_up.as_deref().map(cairn::CatchUp::parse).transpose()?.unwrap_or(spec.catch_up);
    let window = body.catch_up_window_seconds.unwrap_or(spec.catch_up_window_seconds);
    if window > MAX_SECONDS {
        return Err(Problem::invalid(format!("catch_up_window_seconds must be at most {MAX_SECONDS}")));
    }
    spec = spec.catch_up(policy, window);
    let schedule = state.backend.put_schedule(caller, spec, body.replace.unwrap_or(false)).await?;
    Ok((StatusCode::CREATED, Json(schedule)).into_response())
}

/// Removes a schedule; the jobs it enqueued stay.
#[utoipa::path(delete, path = "/api/schedules/{name}", tag = "jobs", operation_id = "remove_schedule",
    params(SchedulePath),
    responses((status = 200, description = "the schedule as it was", body = AnyObject)))]
async fn remove_schedule(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(SchedulePath { name }): Path<SchedulePath>,
) -> Result<Json<cairn::Schedule>, Problem> {
    Ok(Json(state.backend.remove_schedule(caller, name).await?))
}

/// Enqueues a schedule's job now, outside its timetable.
#[utoipa::path(post, path = "/api/schedules/{name}/run", tag = "jobs", operation_id = "run_schedule",
    params(SchedulePath),
    responses((status = 201, description = "the job", body = AnyObject)))]
async fn run_schedule(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(SchedulePath { name }): Path<SchedulePath>,
) -> Result<Response, Problem> {
    let enqueued = state.backend.run_schedule(caller, name).await?;
    Ok((StatusCode::CREATED, Json(enqueued)).into_response())
}
