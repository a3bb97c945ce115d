"""The Diagnose page's own parts."""
