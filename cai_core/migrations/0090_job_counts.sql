-- Job progress in the job's own unit (cai_core/jobs.py JobReporter.count): the counts a job
-- reports, as JSON {unit, total, done, failed, skipped, retries}; the index lets a job card count
-- the judgments a judge job stored (what the store holds wins over what the job said).
ALTER TABLE jobs ADD COLUMN counts_json TEXT;
CREATE INDEX judgments_job ON judgments(job_id);
