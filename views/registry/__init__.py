"""The Models page's own parts."""
