-- The prompts each training export holds, by hash, so an evaluation can flag its prompts that a
-- training dataset already contains (contamination check, issue 12).
CREATE TABLE export_prompts (
    export_id INTEGER NOT NULL REFERENCES exports(id) ON DELETE CASCADE,
    prompt_hash TEXT NOT NULL,
    PRIMARY KEY (export_id, prompt_hash)
);
CREATE INDEX export_prompts_hash ON export_prompts(prompt_hash);
