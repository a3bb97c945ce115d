"""Scoring models: metrics, the out-of-distribution check, the pair report and example confusions."""
