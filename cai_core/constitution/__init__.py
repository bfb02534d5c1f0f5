"""The constitution: principles (model), their versions in the store (versions), files in the
workbench's format (files, parse), the paper's formats (paper_formats) and diffs (diff)."""
