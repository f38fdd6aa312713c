"""Fakes of outside services (LLM providers) used by the tests. See `tests.fakes.llm`."""
