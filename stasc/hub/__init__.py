"""The Hugging Face Hub: publishing a run (adapters, data, cards), reading a run back from a run
directory or the Hub, and assembling or deploying a Space that serves the app for a run."""
