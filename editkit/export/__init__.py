"""From an Edit to files users load: the merged safetensors folder (in memory or shard-streamed), GGUF for
llama.cpp, the llama.cpp round trip, and re-export of a finished run."""
