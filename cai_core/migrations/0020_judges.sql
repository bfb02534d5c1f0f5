-- Judges (model + constitution version + style + settings) by key, so judgments can be grouped
-- and described (export cards, the reliability page) without re-parsing keys.
CREATE TABLE judges (
    judge_key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    constitution_name TEXT,
    constitution_version TEXT,
    style TEXT NOT NULL,                -- mc | cot | parse
    spec_json TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- The annotation queue and the resolved label look up the newest human label per comparison.
CREATE INDEX human_labels_comparison_newest ON human_labels(comparison_id, id);
CREATE INDEX comparisons_created ON comparisons(created_at);
