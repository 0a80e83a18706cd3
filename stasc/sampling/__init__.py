"""Drawing answers from a model: the Sampler protocol the loop calls, and its backends (transformers
on stasc's CPU engine, vLLM on GPUs, and a sharded wrapper that splits a call over processes)."""
