-- Issue 21 item 6 (pages at scale): covering indexes for the aggregates the pages read, so a
-- COUNT / GROUP BY reads a narrow index instead of every wide row (prompt, answers, critiques).
-- Portable SQL (SQLite and PostgreSQL): plain CREATE INDEX IF NOT EXISTS, one partial index.

-- revision.list_batches, lineage: trajectories grouped by batch (+ constitution, model), status and age.
CREATE INDEX IF NOT EXISTS trajectories_batch_cover
    ON trajectories(batch, constitution_name, constitution_version, model, status, created_at);

-- revision.principle_stats: per-principle counts over every critique/revision step.
CREATE INDEX IF NOT EXISTS trajectory_steps_principle_cover
    ON trajectory_steps(principle_id, trajectory_id, violation, edit_words, refusal_introduced);
-- ... and the steps without a revision (revisions = steps - these), without reading the texts.
CREATE INDEX IF NOT EXISTS trajectory_steps_unrevised
    ON trajectory_steps(principle_id, trajectory_id) WHERE revision IS NULL;

-- pairs.list_batches, lineage: comparisons grouped by batch, source / origin / split, and age.
CREATE INDEX IF NOT EXISTS comparisons_batch_cover
    ON comparisons(batch, source, origin, split, created_at);

-- preferences.queue / stats, lineage: judgments per comparison (the verdict aggregate).
CREATE INDEX IF NOT EXISTS judgments_comparison_cover
    ON judgments(comparison_id, judge_key, principle_id, order_shown, parse_status, p_a);
