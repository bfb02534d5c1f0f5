-- The exact messages sent to the model, kept for every judgment and every critique/revision step
-- (issue 13): the pages show them as transcripts. JSON {"messages": [...], "assistant_prefix": ...};
-- NULL on rows stored before this migration.
ALTER TABLE judgments ADD COLUMN prompt_json TEXT;
ALTER TABLE trajectory_steps ADD COLUMN critique_prompt_json TEXT;
ALTER TABLE trajectory_steps ADD COLUMN revision_prompt_json TEXT;
