"""Model clients: one interface, one OpenAI-compatible implementation, a scripted fake."""

from rlm.llm.base import Completion, Message, ModelClient, ModelSettings, Usage

__all__ = ["Completion", "Message", "ModelClient", "ModelSettings", "Usage"]
