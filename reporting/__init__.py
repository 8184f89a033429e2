"""The pieces of report.py: tables, the runs read, charts, the page."""
