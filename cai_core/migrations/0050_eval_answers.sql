-- Evaluation answers: each policy's answer to each prompt, keyed by policy spec + weights
-- fingerprint + prompt + generation settings, so a killed evaluation resumes without
-- regenerating, and two evaluations of the same policy share its answers.
CREATE TABLE eval_answers (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    policy_spec TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params_json TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER,
    finish_reason TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX eval_answers_policy ON eval_answers(policy_spec);
CREATE INDEX evaluations_kind ON evaluations(kind, created_at);
