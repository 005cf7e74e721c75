"""Evaluation: declarative tasks in lm-evaluation-harness's YAML vocabulary and their metrics."""
