"""Files users bring and the sample data: prompt sets, uploads, text diffs."""
