"""Data checks: Great Expectations suites for raw data and (later) features, plus their reports."""
