-- Critique -> revision engine: per-step state (so a killed batch resumes mid-round), prompt
-- metadata, timings of the initial answer, and edit statistics computed once at write time
-- (so browsing and per-principle statistics stay fast over 10k trajectories).
ALTER TABLE trajectories ADD COLUMN meta_json TEXT;
ALTER TABLE trajectories ADD COLUMN rounds INTEGER;            -- rounds planned (0 = answer only)
ALTER TABLE trajectories ADD COLUMN change_ratio REAL;         -- initial -> final: 0 same .. 1 all new
ALTER TABLE trajectories ADD COLUMN timings_json TEXT;         -- initial answer timing
ALTER TABLE trajectory_steps ADD COLUMN state TEXT NOT NULL DEFAULT 'revised';  -- critiqued | revised | stopped
ALTER TABLE trajectory_steps ADD COLUMN edit_words INTEGER;    -- words inserted + deleted by the revision
ALTER TABLE trajectory_steps ADD COLUMN refusal_introduced INTEGER;
CREATE INDEX trajectories_status ON trajectories(status);
CREATE INDEX trajectories_job ON trajectories(job_id);
