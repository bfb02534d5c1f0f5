-- Where a critique's verdict came from (issue 22): the critique's own "Verdict:" line, or the
-- model's answer to the yes/no question asked after it, with P(yes) normalised over Yes/No.
-- NULL on rows stored before this migration (the page says "source not recorded").
ALTER TABLE trajectory_steps ADD COLUMN verdict_source TEXT;
ALTER TABLE trajectory_steps ADD COLUMN p_yes REAL;
