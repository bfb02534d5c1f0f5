-- The initial schema: every domain noun of docs/ARCHITECTURE.md has its table here.

CREATE TABLE constitutions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,              -- content hash of the canonical JSON
    parent_version TEXT,
    content_json TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE prompt_sets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'red-team',   -- red-team | helpfulness | other
    source TEXT,
    created_at REAL NOT NULL
);

CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES prompt_sets(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    category TEXT,
    meta_json TEXT,
    UNIQUE (set_id, idx)
);

-- Background jobs (batch revise, sampling, judging, evaluation): their own process, progress here.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,               -- queued | running | finished | failed | stopped
    argv_json TEXT NOT NULL,
    pid INTEGER,
    total INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    log_path TEXT,
    result_json TEXT,
    exit_code INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    updated_at REAL
);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE trajectories (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,           -- hash of prompt + constitution version + model + params + seed
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    batch TEXT,                         -- user-visible batch name
    prompt_id INTEGER REFERENCES prompts(id) ON DELETE SET NULL,
    prompt TEXT NOT NULL,
    category TEXT,
    constitution_name TEXT NOT NULL,
    constitution_version TEXT NOT NULL,
    model TEXT NOT NULL,
    params_json TEXT NOT NULL,
    seed INTEGER,
    initial TEXT,
    final TEXT,
    status TEXT NOT NULL,               -- pending | done | failed
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX trajectories_batch ON trajectories(batch);
CREATE INDEX trajectories_version ON trajectories(constitution_version);
CREATE INDEX trajectories_created ON trajectories(created_at);

CREATE TABLE trajectory_steps (
    id INTEGER PRIMARY KEY,
    trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
    round INTEGER NOT NULL,
    principle_id TEXT NOT NULL,
    critique TEXT,
    critique_reasoning TEXT,            -- chain of thought, kept apart from the verdict
    violation INTEGER,                  -- 1 found, 0 none, NULL unknown
    revision TEXT,
    timings_json TEXT,
    created_at REAL NOT NULL,
    UNIQUE (trajectory_id, round)
);
CREATE INDEX trajectory_steps_principle ON trajectory_steps(principle_id);

CREATE TABLE comparisons (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,           -- content hash of prompt + both responses (+ source)
    source TEXT NOT NULL,               -- sampled | imported | gold:<set> | eval:<name>
    batch TEXT,
    prompt TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    category TEXT,
    gold_label TEXT,                    -- A | B | tie, for human-labelled gold sets
    policy_a TEXT,
    policy_b TEXT,
    meta_json TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX comparisons_source ON comparisons(source);
CREATE INDEX comparisons_batch ON comparisons(batch);

CREATE TABLE judgments (
    id INTEGER PRIMARY KEY,
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
    judge_key TEXT NOT NULL,            -- model + constitution version + style (+ settings)
    judge_model TEXT NOT NULL,
    constitution_version TEXT,
    principle_id TEXT NOT NULL,
    style TEXT NOT NULL,                -- mc | cot | parse
    order_shown TEXT NOT NULL,          -- AB | BA
    p_a REAL,                           -- P(original A is better), already mapped back from the shown order
    reasoning TEXT,
    raw_output TEXT,
    parse_status TEXT NOT NULL,         -- ok | invalid | error
    latency_s REAL,
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    created_at REAL NOT NULL,
    UNIQUE (comparison_id, judge_key, principle_id, order_shown)
);
CREATE INDEX judgments_judge ON judgments(judge_key);

-- Append-only: two annotators at once both land; the newest label wins for export.
CREATE TABLE human_labels (
    id INTEGER PRIMARY KEY,
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
    annotator TEXT NOT NULL,
    label TEXT NOT NULL,                -- A | B | tie | skip | both_bad
    reason TEXT,
    is_override INTEGER NOT NULL DEFAULT 0,
    blind INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX human_labels_comparison ON human_labels(comparison_id);

CREATE TABLE exports (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,                 -- sft | preference | gold | report
    path TEXT NOT NULL,
    card_json TEXT NOT NULL,            -- lineage: constitution version, model, judges, counts
    created_at REAL NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,                 -- sft | reward | ppo | dpo | rloo | grpo
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL,               -- queued | running | stopped | failed | finished
    pid INTEGER,
    command TEXT,
    run_dir TEXT NOT NULL,
    parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    export_id INTEGER REFERENCES exports(id) ON DELETE SET NULL,
    exit_code INTEGER,
    error TEXT,
    log_tail TEXT,
    final_metrics_json TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL
);

CREATE TABLE run_metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    data_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX run_metrics_run ON run_metrics(run_id, step);

CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- policies | ab-experiment
    spec_json TEXT NOT NULL,
    result_json TEXT,
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    created_at REAL NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL
);
