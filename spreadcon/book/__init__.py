"""The chapters' helpers: tables, figures and verdicts from records. Not training code (not in the source hash)."""

