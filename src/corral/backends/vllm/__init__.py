"""vLLM: every non-GGUF model (safetensors / Hugging Face layout), Linux only."""
