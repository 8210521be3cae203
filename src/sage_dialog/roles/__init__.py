"""The roles a pipeline plays besides the assistant's model: protocols, the one factory, LLM roles."""
