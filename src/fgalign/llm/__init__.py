"""OpenAI-compatible chat clients (retries with backoff, an on-disk reply cache, the key from the environment),
shared by the LLM editor, the LLM judge and anything later that asks a chat model."""
