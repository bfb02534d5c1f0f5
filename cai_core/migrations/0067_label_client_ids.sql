-- Idempotent annotation: a human label may carry the id its client gave it (the Annotate page: one
-- per shown item; the CLI: --client-id). The same (comparison, annotator, client id) is stored once,
-- so a repeated key press or a replayed request cannot add a second label.
ALTER TABLE human_labels ADD COLUMN client_id TEXT;
CREATE UNIQUE INDEX human_labels_client_id ON human_labels(comparison_id, annotator, client_id)
    WHERE client_id IS NOT NULL;
