"""The embedded offline model: llama.cpp's server built from pinned source, and its weights."""
