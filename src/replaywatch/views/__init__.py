"""What operators read: diffs, reports, the tail of the output topic, the web view."""
