"""The RL-from-AI-feedback phase: response pairs (pairs), AI judges that choose between them
(judges), human labels, overrides and the preference dataset (preferences)."""
