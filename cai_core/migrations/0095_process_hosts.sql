-- The machine a job's or a run's process runs on (socket.gethostname()), beside its pid: with a store
-- shared by several machines (PostgreSQL), only the machine that started a process checks whether it
-- is alive (a pid means nothing on another machine) or stops it. NULL on rows from before: this machine.
ALTER TABLE jobs ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN host TEXT;
