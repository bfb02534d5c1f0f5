-- Claims per item: one process at a time works on a trajectory (supervised/revision.py). The claim
-- names the writer (host:pid:job:token) and is refreshed on every save; each stored text records
-- the writer that produced it, so a trajectory assembled from two processes would show.
ALTER TABLE trajectories ADD COLUMN claimed_by TEXT;
ALTER TABLE trajectories ADD COLUMN claimed_at REAL;
ALTER TABLE trajectories ADD COLUMN initial_writer TEXT;
ALTER TABLE trajectory_steps ADD COLUMN critique_writer TEXT;
ALTER TABLE trajectory_steps ADD COLUMN revision_writer TEXT;
