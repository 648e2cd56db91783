"""Tuning: the retrieval evaluator, pseudo-queries and fine-tuning."""
