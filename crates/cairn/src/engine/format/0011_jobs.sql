-- Format version 11: the durable job queue (jobs/). It lives in the store's own database so
-- that a job can be enqueued in the same transaction as the records it is about, and every
-- backup holds the queue. `attempt` only ever grows: with the job's id it fences a worker's
-- completion, failure and progress (a worker whose lease was lost holds an older attempt);
-- `attempt_base` is where the current run's attempts started (a restart moves it up).
CREATE TABLE cairn_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    args             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                         ('available', 'scheduled', 'running', 'retryable', 'completed', 'cancelled', 'discarded')),
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    attempt_base     INTEGER NOT NULL DEFAULT 0 CHECK (attempt_base <= attempt),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    tags             TEXT NOT NULL DEFAULT '[]',
    unique_key       TEXT,
    unique_basis     TEXT,
    unique_completed INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         REAL CHECK (progress IS NULL OR (progress >= 0 AND progress <= 100)),
    progress_message TEXT,
    result           TEXT,
    errors           TEXT NOT NULL DEFAULT '[]',
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempted_at     INTEGER,
    finished_at      INTEGER,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL)),
    CHECK ((state IN ('completed', 'cancelled', 'discarded')) = (finished_at IS NOT NULL))
) STRICT;
-- Claiming walks this in order; only jobs that may still run are in it.
CREATE INDEX cairn_jobs_ready ON cairn_jobs (priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Counting a queue's running jobs, and finding expired leases.
CREATE INDEX cairn_jobs_running ON cairn_jobs (queue, lease_until) WHERE state = 'running';
-- Pruning finished jobs by age.
CREATE INDEX cairn_jobs_finished ON cairn_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- A unique job holds its key while it is waiting or running (and, if asked, once completed).
CREATE UNIQUE INDEX cairn_jobs_unique ON cairn_jobs (unique_key) WHERE unique_key IS NOT NULL;

-- Limits per queue, across every worker of the store.
CREATE TABLE cairn_job_queues (
    name        TEXT PRIMARY KEY,
    max_running INTEGER CHECK (max_running IS NULL OR max_running >= 1),
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1))
) STRICT;

-- Cron schedules. `last_fire` is the last occurrence handled (fired or skipped by the
-- catch-up policy), so a restart neither repeats nor silently skips a run.
CREATE TABLE cairn_schedules (
    name            TEXT PRIMARY KEY,
    cron            TEXT NOT NULL,
    time_zone       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    queue           TEXT NOT NULL,
    args            TEXT NOT NULL,
    catch_up        TEXT NOT NULL CHECK (catch_up IN ('none', 'one', 'all')),
    catch_up_window INTEGER NOT NULL CHECK (catch_up_window >= 0),
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    last_fire       INTEGER,
    created_at      INTEGER NOT NULL
) STRICT;

-- Files the ingest watchers have taken in (or turned away), so that a rescan or a restart
-- does not take one in twice: by path, size and modification time, and by content hash.
CREATE TABLE cairn_ingested (
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ingested', 'duplicate')),
    collection  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
) STRICT;
CREATE INDEX cairn_ingested_by_hash ON cairn_ingested (hash, collection);
