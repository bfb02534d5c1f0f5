-- Issue 21 item 6 (pages at scale): the gold sets (comparisons with a gold label, by source) read
-- from a small partial index instead of every comparison row. Portable SQL (SQLite and PostgreSQL).
CREATE INDEX IF NOT EXISTS comparisons_gold
    ON comparisons(source, id) WHERE gold_label IS NOT NULL;
