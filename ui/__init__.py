"""Streamlit building blocks shared by the pages: charts, widgets, cached resources."""
