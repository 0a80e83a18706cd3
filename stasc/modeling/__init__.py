"""Models and their tokenizers: finding and loading the base model, the policy (base model plus one
trainable LoRA adapter), and turning conversations into token ids through the chat template."""
