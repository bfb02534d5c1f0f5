-- Typed jobs: the spec (cai_core/jobspecs.py) a job was started with, as JSON; argv_json stays the
-- exact command line that ran.
ALTER TABLE jobs ADD COLUMN spec_json TEXT;
