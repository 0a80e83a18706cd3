"""Fine-tuning: training the policy's LoRA adapter on the kept correction conversations."""
