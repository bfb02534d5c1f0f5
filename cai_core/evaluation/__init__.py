"""Did training help? Policies (policies) answer held-out prompts (answers), judges compare them
(evaluate), with evasiveness, statistics, constitution A/B experiments and HTML reports."""
