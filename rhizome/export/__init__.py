"""Export: merge a LoRA adapter into its base model and write it for transformers, llama.cpp and Ollama."""
