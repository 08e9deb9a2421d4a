"""What llama.cpp will allocate for a GGUF model under given launch settings."""
