"""stasc's own decoding engine for the transformers backend: batched sampling with a shared prompt
prefix, packed weights, fused Llama steps, and samples that share rows while their tokens agree."""
