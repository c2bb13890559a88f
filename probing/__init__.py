"""mcicl probing: real pretrained models through Hugging Face transformers."""
