"""The supervised phase of CAI (SL-CAI): answer -> critique -> revision (revision), refusals a
revision introduced (refusals), and the SFT dataset made from the final revisions (sft_export)."""
