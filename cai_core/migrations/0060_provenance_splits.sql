-- Provenance and splits (issue 12): every comparison and trajectory records where it came from
-- (origin: sampled | imported | gold:<set> | evaluation:<name> | experiment:<name>) and which split
-- it belongs to (train | eval | gold). Exports read only the train split unless told otherwise.
ALTER TABLE comparisons ADD COLUMN origin TEXT;
ALTER TABLE comparisons ADD COLUMN split TEXT;
ALTER TABLE trajectories ADD COLUMN origin TEXT;
ALTER TABLE trajectories ADD COLUMN split TEXT;

-- Backfill from what the rows already carry: comparisons.source ('eval:<name>' from evaluations,
-- 'ab:<name>' from A/B experiments, 'gold:<set>' from gold imports), and for trajectories the
-- batch an A/B experiment's arms write ('ab-<name>-A' / 'ab-<name>-B').
UPDATE comparisons SET origin = CASE
    WHEN source LIKE 'eval:%' THEN 'evaluation:' || substr(source, 6)
    WHEN source LIKE 'ab:%' THEN 'experiment:' || substr(source, 4)
    ELSE source END;
UPDATE comparisons SET source = origin;
UPDATE comparisons SET split = CASE
    WHEN origin LIKE 'gold:%' THEN 'gold'
    WHEN origin LIKE 'evaluation:%' OR origin LIKE 'experiment:%' THEN 'eval'
    ELSE 'train' END;
UPDATE trajectories SET origin = 'sampled', split = 'train';
UPDATE trajectories SET
    origin = 'experiment:' || (SELECT e.name FROM evaluations e WHERE e.kind = 'ab-experiment'
                               AND trajectories.batch IN ('ab-' || e.name || '-A', 'ab-' || e.name || '-B') LIMIT 1),
    split = 'eval'
WHERE EXISTS (SELECT 1 FROM evaluations e WHERE e.kind = 'ab-experiment'
              AND trajectories.batch IN ('ab-' || e.name || '-A', 'ab-' || e.name || '-B'));

CREATE INDEX comparisons_split ON comparisons(split, origin);
CREATE INDEX trajectories_split ON trajectories(split, origin);
