"""End-to-end reproductions of the papers' experiments, each writing a report under docs/results/."""
