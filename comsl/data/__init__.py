"""Data: audio decoding, speech front ends, tokenizer, CoVoST 2 preparation, datasets and batching."""
