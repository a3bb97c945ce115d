"""Labelled image folders, uploaded scans and dataset health: what the networks are fed."""
