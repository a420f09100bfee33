"""Design-space exploration of systolic accelerators (XploreDL style)."""
