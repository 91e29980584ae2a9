"""The RLM loop: the orchestrator, reply parsing, prompts, sub-calls, contexts and traces."""
