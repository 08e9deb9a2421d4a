"""llama.cpp: ``llama-server`` for GGUF models, ``rpc-server`` on helper workers."""
