"""The Train page's own parts."""
