"""Answers: prompt and LLM client, extractive answers, citations, refusal."""
