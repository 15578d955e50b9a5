"""Data checks: Great Expectations suites for the raw source (`raw`) and checks of the feature
job's output (`features`), with their reports in one shape (`report`)."""
