"""Model access: specs -> cached backends (specs), background loading (loader), the backends
themselves (backends/), the local llama.cpp server (llama_server) and the tiny test model (tiny)."""
