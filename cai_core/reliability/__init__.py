"""How far a judge can be trusted: the label interchange format (labels), the paper's eval sets
(paper_evals), gold sets in the workspace (gold) and agreement/bias/calibration statistics (metrics)."""
