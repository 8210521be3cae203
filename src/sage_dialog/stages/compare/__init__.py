"""Whole-dialog pairwise comparison of models: play, judge, statistics, report."""
