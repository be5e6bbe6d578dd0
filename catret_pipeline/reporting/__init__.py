"""Reporting: the Markdown report beside the paper's Table 1, with PNG plots."""
